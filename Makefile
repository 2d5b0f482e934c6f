# Two commands do everything on a fresh machine (Python 3.10+):
#   make book   -- set up, then build the book with every notebook executed
#   make test   -- set up, then run every test (unit, parity, notebooks, widgets, browser)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: book test setup clean bench widgets-js browser-deps test-book book-execute course-model finetuned-model lab notebooks dist nbval

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test,lab]"
	touch $@

setup: $(STAMP)

WM_JS := book/_wm/wm/embed-amd.js

# The widget JavaScript of the static book, self-hosted so that widgets render with no CDN:
# npm tarballs of @jupyter-widgets/html-manager and requirejs unpacked into book/_wm/wm (not committed).
$(WM_JS): book/_wm/install.sh
	sh book/_wm/install.sh
widgets-js: $(WM_JS)

# Headless Chromium for the browser tests: Debian's package, never a downloaded browser.
browser-deps:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium"; fi; }

book: $(STAMP) $(WM_JS)
	$(VENV)/bin/jupyter-book build . -W --keep-going

# Re-execute the committed chapters in place (after editing one, or when the shipped model changes),
# so that their saved outputs, which nbval compares against, are current.
book-execute: $(STAMP)
	cd book && for nb in 0*.ipynb; do ENGINE_BACKEND=numpy ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace "$$nb" || exit 1; done
	$(MAKE) notebooks

# The notebooks as every Jupyter client reads them: the numbers in the prose taken from the saved outputs,
# the set-up cell (Colab, Binder) and the exercise links from _config.yml (book/_ext/course_notebooks.py).
notebooks: $(STAMP)
	$(PY) book/_ext/course_notebooks.py

# JupyterLab in the project's environment, on the chapters (book/) and the exercises (exercises/); the
# chapters are trusted first, so that their widgets render from their saved state before any cell runs.
lab: $(STAMP)
	$(VENV)/bin/jupyter trust book/*.ipynb   # the widgets render from saved state only in trusted notebooks
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/book $(if $(filter 0,$(shell id -u)),--allow-root)

# The wheel and sdist of the `how-gpt3-works` distribution, into dist/.
dist: $(STAMP)
	$(PY) -m build --outdir dist .

# nbval compares every chapter's outputs with the committed ones, twice: with the BLAS on one thread and
# on the machine's default, so that an output that depends on the thread count fails here, not elsewhere.
nbval: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ENGINE_BACKEND=numpy $(PY) -m pytest --nbval book/ -p no:cacheprovider
	ENGINE_BACKEND=numpy $(PY) -m pytest --nbval book/ -p no:cacheprovider

# The book's own tests, after `make book`: the site in Chromium (pages, figures, saved widgets),
# one widget live through Voila, then nbval (every chapter re-executed, outputs compared).
test-book: book browser-deps
	$(PY) -m pytest tests/test_book.py tests/test_widgets.py
	$(MAKE) nbval

# Everything: build the book (its notebooks executed), then every pytest test (unit, reference parity,
# exercises, widgets, the built site in Chromium, Voila, the wheel and the notebooks in a fresh environment),
# then nbval on every chapter at one BLAS thread and at the default.
test: book browser-deps
	$(PY) -m pytest tests
	$(MAKE) nbval

bench: $(STAMP)
	$(PY) -m bench

# The shipped course model (engine/assets/shakespeare) from scratch, about 8 hours on two cores:
# three teachers, then the shipped model, which learns from their averaged predictions as well as from
# the text (engine/distill.py), then the export that writes the assets and the model card (the mean of
# the student's last five snapshots, 500 steps apart, its logits divided by a temperature fitted on the
# first 48 held-out windows: engine/calibrate.py). Run it again after an interruption: each run
# continues from its last checkpoint (a finished one is skipped; ckpt.old is the one a save cut short
# kept; a folder holding a run is never started again from scratch: `train` refuses it).
COURSE_TRAIN := OPENBLAS_NUM_THREADS=1 $(PY) -m engine train --data shakespeare --workers 2 --no-progress
COURSE_RUN = if [ -d $(1)/ckpt ] || [ -d $(1)/ckpt.old ]; then $(COURSE_TRAIN) --out $(1) --resume; \
	else $(COURSE_TRAIN) --out $(1) --batch-size 8 --warmup 200 $(2); fi
course-model: $(STAMP)
	$(call COURSE_RUN,runs/teacher-a,--dropout 0.1 --steps 7000)
	$(call COURSE_RUN,runs/teacher-b,--dropout 0.1 --steps 7000 --d-model 256 --n-head 8 --lr 1.5e-3)
	$(call COURSE_RUN,runs/teacher-c,--dropout 0.2 --steps 8000)
	$(call COURSE_RUN,runs/shakespeare,--dropout 0.1 --steps 14000 --snapshot-every 500 --keep-snapshots 5 \
	  --distill runs/teacher-a runs/teacher-b runs/teacher-c --distill-alpha 0.8)
	$(PY) -c "from engine.pretrained import export; export('runs/shakespeare', average=5, calibrate=48)"

# Chapter 8's fine-tuned model: a LoRA adapter of the course model for the description -> HTML task
# (engine/assets/shakespeare-html; the recipe is engine.finetune.RECIPE), about 6 minutes on one core.
# tests/test_finetune.py recomputes its accuracy on the held-out words.
finetuned-model: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(PY) -m engine finetune --recipe html --no-progress --overwrite --adapter-out engine/assets/shakespeare-html

clean:
	rm -rf _build dist
