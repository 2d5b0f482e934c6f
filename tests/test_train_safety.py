"""`python -m engine train` loses no run: an existing run is refused unless --resume or --overwrite, a killed
save's debris is cleared (never following a planted symlink), bad settings and disks end in one `error:` line
with exit status 2, and SIGTERM saves a checkpoint and exits non-zero."""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import checkpoint as ckpt_mod
from engine.checkpoint import list_snapshots, load_checkpoint
from engine.cli import main
from engine.files import atomic_write, remove_leftovers, sha256_file

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train", "--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
        "--no-progress"]


def train(capsys, out, *extra):
    code = main(TINY + ["--out", str(out), *extra])
    o, e = capsys.readouterr()
    return code, o, e


def step_of(path) -> int:
    return load_checkpoint(path)["state"]["step"]


def one_error_line(err: str) -> str:
    """The `error:` line that ends stderr (a tokenizer's progress bar may come before it)."""
    assert "Traceback" not in err, err
    last = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert last.startswith("error: "), err
    return last


# ---------------------------------------------------------------------- an existing run
def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, out, "--steps", "6", "--snapshot-every", "2")[0] == 0
    assert step_of(out / "ckpt") == 6 and [s for s, _ in list_snapshots(out)] == [2, 4, 6]
    before = sha256_file(out / "ckpt" / "model.safetensors")

    code, o, err = train(capsys, out, "--steps", "2")  # the slip of the issue: a new run over an old one
    assert code == 2 and o == "" and err.count("\n") == 1
    assert err.startswith(f"error: {out} already holds a training run") and "--resume" in err and "--overwrite" in err
    assert sha256_file(out / "ckpt" / "model.safetensors") == before and step_of(out / "ckpt") == 6

    code, o, err = train(capsys, out, "--steps", "8", "--resume")
    assert code == 0, err
    assert "resumed at step 6" in o and step_of(out / "ckpt") == 8

    code, o, err = train(capsys, out, "--steps", "3", "--snapshot-every", "1", "--keep-snapshots", "2",
                         "--overwrite")
    assert code == 0, err
    assert step_of(out / "ckpt") == 3
    assert [s for s, _ in list_snapshots(out)] == [2, 3]  # the new run's, none of the old run's
    assert json.loads((out / "metrics.json").read_text())["step"] == 3

    code, _, err = train(capsys, out, "--resume", "--overwrite")
    assert code == 2 and err.startswith("error: --resume continues the run") and err.count("\n") == 1


def test_makefile_course_recipe_resumes_an_existing_run(tmp_path):
    """The course-model recipe (COURSE_RUN, taken from the Makefile) starts a run, then resumes it."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^COURSE_RUN = (?:.*\\\n)*.*\n", text, re.M).group(0)
    mk = tmp_path / "test.mk"
    train_cmd = (f"OPENBLAS_NUM_THREADS=1 {sys.executable} -m engine train --preset course-tiny --data book "
                 "--eval-interval 0 --no-progress")
    mk.write_text(f"COURSE_TRAIN := {train_cmd}\n{recipe}\nall:\n"
                  f"\t$(call COURSE_RUN,{tmp_path}/r,--steps 2)\n"
                  f"\t$(call COURSE_RUN,{tmp_path}/r,--steps 2)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([make, "-s", "-f", str(mk), "all"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("resumed at step 2") == 1  # the second call resumed (a finished run: nothing to do)
    os.replace(tmp_path / "r" / "ckpt", tmp_path / "r" / "ckpt.old")  # a save cut short between its renames
    r = subprocess.run([make, "-s", "-f", str(mk), "all"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("resumed at step 2") == 2


# ---------------------------------------------------------------------- debris of killed saves
def test_leftover_temporary_files_are_removed_and_symlinks_never_followed(capsys, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, out, "--steps", "2", "--snapshot-every", "1")[0] == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    left = out / ".ckpt.tmp-abcd1234"  # what 30 SIGKILLs during saves leave: whole checkpoints
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"\0" * 1000)
    (out / ".best.tmp-zzzz9999").symlink_to(victim)  # planted: a cleanup that followed it would empty victim
    (out / ".metrics.json.k3j4h5g6.tmp").write_text("{}")  # an older atomic_write's temporary file
    (out / "snapshots" / ".step0000002.safetensors.tmp-qwer1234").mkdir()
    (out / "notes.tmp-abcd1234").write_text("not ours: no leading dot")
    (out / "ckpt.old").symlink_to(victim)  # planted where a save keeps the previous checkpoint
    code, o, err = train(capsys, out, "--steps", "4", "--resume", "--ckpt-interval", "1")
    assert code == 0, err
    assert "removed 4 temporary file(s)" in o
    names = sorted(p.name for p in out.iterdir()) + sorted(p.name for p in (out / "snapshots").iterdir())
    assert not [n for n in names if ".tmp-" in n and n.startswith(".")] and ".metrics.json.k3j4h5g6.tmp" not in names
    assert "notes.tmp-abcd1234" in names
    assert (victim / "precious.txt").read_text() == "keep me" and victim.is_dir()
    assert step_of(out / "ckpt") == 4 and not (out / "ckpt.old").exists()
    assert remove_leftovers(tmp_path / "no such folder") == []


def test_temporary_files_are_made_in_a_new_private_folder(tmp_path):
    seen = []

    def write(tmp):
        p = Path(tmp)
        seen.append((p.parent.name, p.parent.is_symlink(), p.parent.stat().st_mode & 0o777, p.exists()))
        p.write_text("new")

    (tmp_path / "dest").write_text("old")
    atomic_write(tmp_path / "dest", write)
    (name, link, mode, existed), = seen
    assert name.startswith(".dest.tmp-") and not link and mode == 0o700 and not existed
    assert (tmp_path / "dest").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["dest"]


def test_a_planted_temporary_name_is_never_followed(tmp_path, monkeypatch):
    """Someone who guessed the next temporary name and put a symlink there: the save makes another name."""
    import tempfile

    if not hasattr(tempfile, "_get_candidate_names"):
        pytest.skip("this Python's tempfile names its candidates otherwise")
    names = iter(["planted1", "fresh123", "planted1", "fresh456"])  # each save meets the plant first
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".metrics.json.tmp-planted1").symlink_to(victim)
    (tmp_path / "run" / ".ckpt.tmp-planted1").symlink_to(victim)
    atomic_write(tmp_path / "run" / "metrics.json", lambda f: Path(f).write_text("{}"))
    ckpt_mod.save_checkpoint(tmp_path / "run" / "ckpt", {"w": np.ones(2, np.float32)}, {"step": 1})
    assert list(victim.iterdir()) == []  # nothing was written through the symlinks
    assert (tmp_path / "run" / "metrics.json").read_text() == "{}" and step_of(tmp_path / "run" / "ckpt") == 1


# ---------------------------------------------------------------------- one line, exit 2
@pytest.mark.parametrize("argv,msg", [
    (["--lr", "nan"], "error: --lr must be a finite number > 0, got nan"),
    (["--lr", "-0.001"], "error: --lr must be a finite number > 0"),
    (["--ckpt-interval", "-1"], "error: --ckpt-interval must be a whole number >= 0 (0: never), got -1"),
    (["--steps", "0"], "error: --steps must be a whole number >= 1, got 0"),
    (["--dropout", "1.5"], "error: --dropout must be in [0, 1)"),
    (["--workers", "0"], "error: --workers must be a whole number >= 1"),
    (["--max-minutes", "inf"], "error: --max-minutes must be a finite number > 0"),
    (["--distill-k", "0"], "error: --distill-k must be >= 1"),
])
def test_bad_settings_are_refused_before_any_work(capsys, tmp_path, argv, msg):
    code, o, err = train(capsys, tmp_path / "run", *argv)
    assert code == 2 and o == "" and err.count("\n") == 1 and err.startswith(msg), err
    assert not (tmp_path / "run").exists()  # refused before the folder was even made


def test_out_naming_a_file(capsys, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    code, o, err = train(capsys, f, "--steps", "1")
    assert code == 2 and o == "" and err == f"error: --out {f} is a file; give a folder for the run\n"
    assert f.read_text() == "mine"
    code, o, err = train(capsys, f / "run", "--steps", "1")  # a folder inside a file
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Not a directory" in err


def test_read_only_output_folder(capsys, read_only_folder):
    code, o, err = train(capsys, read_only_folder, "--steps", "1")
    assert code == 2 and o == ""
    assert err == f"error: cannot write to the output folder {read_only_folder}: it is read-only\n"
    code, o, err = train(capsys, read_only_folder / "run", "--steps", "1")  # cannot even be made
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and str(read_only_folder / "run") in err


def test_disk_full_while_saving(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train(capsys, out, "--steps", "2")[0] == 0

    def full(tensors, path, metadata=None):  # what safetensors raises when the disk fills up
        Path(path).write_bytes(b"\0" * 10)
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt_mod, "save_file", full)
    code, o, err = train(capsys, out, "--steps", "4", "--resume", "--ckpt-interval", "1")
    assert code == 2
    line = one_error_line(err)
    assert line == (f"error: checkpoint {out / 'ckpt'} was not saved: No space left on device; the last complete "
                    "checkpoint is kept")
    monkeypatch.undo()
    assert step_of(out / "ckpt") == 2 and not [p for p in out.iterdir() if ".tmp-" in p.name]
    # a plain file write (metrics.json, the tokenizer) that fills the disk: one line naming the file

    def no_space(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as e:
        atomic_write(out / "metrics.json", no_space)
    assert e.value.errno == errno.ENOSPC and str(out / "metrics.json") in e.value.strerror


def _rewrite_state(ck: Path, change) -> None:
    """Edit state.json and record its new SHA-256, as a hand-edited or foreign checkpoint would."""
    st = json.loads((ck / "state.json").read_text())
    change(st)
    (ck / "state.json").write_text(json.dumps(st))
    man = json.loads((ck / "manifest.json").read_text())
    man["state.json"] = sha256_file(ck / "state.json")
    (ck / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("change,msg", [
    (lambda st: st.pop("rng"), "state.json lacks 'rng' entry; it cannot be resumed"),
    (lambda st: st.update(rng=[1, 2]), "state.json has a malformed 'rng' entry"),
    (lambda st: st["rng"].update(state={"state": "x"}), "'rng' entry is not a random generator's state"),
    (lambda st: st.update(config=[1]), "state.json has a malformed 'config' entry"),
])
def test_resume_from_a_state_file_without_its_rng(capsys, tmp_path, change, msg):
    out = tmp_path / "run"
    assert train(capsys, out, "--steps", "2")[0] == 0
    _rewrite_state(out / "ckpt", change)
    code, o, err = train(capsys, out, "--steps", "4", "--resume")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"error: checkpoint {out / 'ckpt'}") and msg in line, line


def test_resume_with_a_foreign_tensor_in_the_checkpoint(capsys, tmp_path):
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "run"
    assert train(capsys, out, "--steps", "2")[0] == 0
    f = out / "ckpt" / "model.safetensors"
    w = load_file(str(f))
    w["h.7.ln_1.g"] = np.ones(32, np.float32)
    w["wpe"] = w["wpe"].astype(np.int32)
    save_file(w, str(f))
    man = json.loads((out / "ckpt" / "manifest.json").read_text())
    man["model.safetensors"] = sha256_file(f)
    (out / "ckpt" / "manifest.json").write_text(json.dumps(man))
    code, _, err = train(capsys, out, "--steps", "4", "--resume")
    assert code == 2
    line = one_error_line(err)
    assert "unexpected: h.7.ln_1.g" in line and "not floating point: wpe (int32)" in line


# ---------------------------------------------------------------------- SIGTERM
def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    cmd = [sys.executable, "-m", "engine", *TINY, "--out", str(tmp_path), "--steps", "100000", "--ckpt-interval", "0"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:  # wait until training has started
        if line.startswith("GPT("):
            break
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in out and "SIGTERM" in err and "Traceback" not in err
    assert step_of(tmp_path / "ckpt") >= 1
