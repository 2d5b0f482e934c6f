"""Chapter 8, Fine-tuning: teach a pretrained model a small task, and compare with few-shot prompting.

The task and its prompts are in ``engine.finetune_data`` (re-exported here); the low-rank
adapter in ``engine.lora``. This module evaluates (exact match of the greedy continuation up to
the end of the line), fine-tunes (the loss only on the answer after ``[toCode]``: the description's
tokens get target -1), and runs the whole comparison: zero-shot, few-shot, fine-tuned.

The recipe that reaches the target (``RECIPE``; ``make finetuned-model`` writes the shipped adapter
``engine/assets/shakespeare-html``, about 6 minutes on one core): a LoRA adapter (``engine.lora``) of
rank 8 on every attention and MLP matrix, plus the embedding rows of the answer tokens pretraining
never saw (``< = > / #`` and a few rare word pieces, ``answer_tokens_unseen``); trained on the 57 task
words, the ~1,500 lowercase words of the tokenizer's vocabulary and 1,500 words glued from vocabulary
pieces (not the 57 alone, which the model memorises); 800 steps of 16 examples, learning rate 5e-3
with warm-up and cosine decay.
"""
from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .checkpoint import save_checkpoint
from .files import check_writable
from .finetune_data import (END, PREFIX, SEP, TEMPLATES, TEST_WORDS, TRAIN_WORDS, WORDS, Example,  # noqa: F401
                            few_shot_prompt, make_dataset, piece_words, random_words, right_form, template_of,
                            train_test_split, vocab_words)
from .lora import (Adapter, adapter_grads, init_adapter, load_adapter, merge, merged_params, save_adapter,
                   unseen_tokens)
from .loading import load_model as _load_model
from .model import GPT, tree_flatten, tree_unflatten
from .optim import AdamW, lr_at

WORD_SETS = ("task", "vocab", "vocab+random", "vocab+pieces")
ASSET = "shakespeare-html"  # the shipped adapter, beside the course model in engine/assets
# What `make finetuned-model` runs (python -m engine finetune --recipe html): see the module docstring.
RECIPE = dict(words="vocab+pieces", lora_rank=8, lora_alpha=16.0, lora_targets=["attn.c_attn.w", "attn.c_proj.w",
              "mlp.c_fc.w", "mlp.c_proj.w"], steps=800, lr=5e-3, batch_size=16, warmup=20, seed=0)


# ---------------------------------------------------------------------- evaluation
def complete(model: GPT, enc, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` up to the end of the line (or ``max_new_tokens``)."""
    ids = enc.encode_ordinary(prompt)
    n_ctx = model.cfg.n_ctx
    if len(ids) > n_ctx - 1:
        ids = ids[-(n_ctx - 1):]  # keep the end of a long few-shot prompt
    out = []
    text = ""
    for tok in model.generate_stream(ids, max_new_tokens, temperature=0.0, overflow="slide"):
        out.append(int(tok))
        text = enc.decode(out)
        if END in text:
            break
    return text.split(END)[0] + (END if END in text else "")


def evaluate(model: GPT, enc, examples: list[Example], shots: list[Example] | None = None,
             max_new_tokens: int = 40, return_outputs: bool = False):
    """Exact-match accuracy of greedy completions (0..1). With ``shots``, a few-shot prompt is used.

    With ``return_outputs``: (accuracy, [(example, completion, exact, right_form), ...]).
    """
    correct, outputs = 0, []
    for ex in examples:
        prompt = few_shot_prompt(ex, shots) if shots else ex.prompt()
        got = complete(model, enc, prompt, max_new_tokens)
        ok = got == ex.target()
        correct += ok
        outputs.append((ex, got, ok, right_form(ex, got)))
    acc = correct / max(1, len(examples))
    return (acc, outputs) if return_outputs else acc


def by_template(outputs) -> list[float]:
    """Exact-match accuracy per template (``TEMPLATES`` order; NaN where none) from ``evaluate``'s outputs."""
    hits = [[o[2] for o in outputs if template_of(o[0]) == i] for i in range(len(TEMPLATES))]
    return [sum(h) / len(h) if h else float("nan") for h in hits]


def _form(outputs) -> float:
    return sum(o[3] for o in outputs) / max(1, len(outputs))


def word_span(enc, ex: Example):
    """Where the quoted word is, in tokens: (ids of ex.line() without its last token, positions of the
    description's tokens that hold the word, positions whose *next* token holds the word in the answer)."""
    d, c = TEMPLATES[template_of(ex)]
    at, n = d.index("{w}"), len(ex.description) - len(d) + len("{w}")  # the word: n characters at ``at``
    word = ex.description[at:at + n]
    ids = enc.encode_ordinary(ex.line())
    n_prompt = len(enc.encode_ordinary(ex.prompt()))
    starts = [len(enc.decode(ids[:i])) for i in range(len(ids) + 1)]  # character offset of every token

    def overlapping(start):  # tokens whose characters overlap [start, start + len(word))
        return [i for i in range(len(ids)) if starts[i] < start + len(word) and starts[i + 1] > start]

    desc = overlapping(len(PREFIX) + d.index("{w}"))
    ans = [i - 1 for i in overlapping(len(ex.prompt()) + 1 + c.index("{w}")) if i >= n_prompt]
    return ids[:-1], desc, ans


def copy_attention(model: GPT, enc, examples: list[Example]):
    """How much each head looks at the description's word while writing it: (n_layer, n_head), the
    attention weight on the description's word tokens, summed over them, averaged over the answer
    positions that predict the word's tokens and over the examples."""
    total = np.zeros((model.cfg.n_layer, model.cfg.n_head))
    for ex in examples:
        ids, desc, ans = word_span(enc, ex)
        att = model.forward(np.asarray(ids), return_attention=True).attention  # n_layer x (H, T, T)
        for layer, a in enumerate(att):
            a = to_numpy(a)
            total[layer] += a[:, ans][:, :, desc].sum(-1).mean(-1)
    return total / max(1, len(examples))


# ---------------------------------------------------------------------- training
def encode_examples(enc, examples: list[Example], n_ctx: int):
    """Token ids and targets for fine-tuning: (N, T) arrays, T the longest line, padded.

    targets[i, t] is the next token where it belongs to the answer, else -1 (prompt and padding).
    """
    rows, tgts = [], []
    for ex in examples:
        p = enc.encode_ordinary(ex.prompt())
        a = enc.encode_ordinary(ex.target())
        ids = p + a
        if len(ids) > n_ctx + 1:
            raise ValueError(f"example longer than the context ({len(ids)} > {n_ctx + 1} tokens): {ex.line()!r}")
        rows.append(ids[:-1])
        tgts.append([-1] * (len(p) - 1) + a)
    T = max(map(len, rows))
    X = np.zeros((len(rows), T), dtype=np.int64)
    Y = np.full((len(rows), T), -1, dtype=np.int64)
    for i, (x, y) in enumerate(zip(rows, tgts)):
        X[i, :len(x)] = x
        Y[i, :len(y)] = y
    return X, Y


def trainable_names(model: GPT, trainable=None) -> list[str] | None:
    """Parameter names to train. ``trainable``: None (all), a list of name prefixes
    (e.g. ``["h.3.", "ln_f."]``), or a predicate on the name."""
    names = list(tree_flatten(model.params))
    if trainable is None:
        return None
    if callable(trainable):
        chosen = [n for n in names if trainable(n)]
    else:
        if isinstance(trainable, str):
            trainable = [trainable]
        chosen = [n for n in names if any(n == p or n.startswith(p) for p in trainable)]
    if not chosen:
        raise ValueError(f"trainable={trainable!r} selects no parameter; names look like {names[:3]} ...")
    return chosen


def finetune(model: GPT, enc, examples: list[Example], steps: int = 100, lr: float = 1e-3, batch_size: int = 16,
             trainable=None, weight_decay: float = 0.0, warmup: int = 10, seed: int = 0, progress: bool = False,
             workers: int = 1, adapter: Adapter | None = None, callback=None) -> list[float]:
    """Fine-tune ``model`` in place on ``examples``; returns the (answer) loss of every step.

    callback: called as ``callback(step, loss)`` after each step (step 1, 2, ...), e.g. to record
    the model's answers as it learns (``engine.widgets.frames.AnswerRecorder``).

    trainable: None (every parameter), name prefixes such as ``["h.3.", "ln_f."]``, or a predicate;
    the other parameters stay frozen (AdamW keeps no state for them).
    adapter: an ``engine.lora.Adapter`` to train instead; every weight of the model stays frozen
    and, at the end, ``model.params`` holds the base weights with the adapter merged in (the other
    arrays are the model's own, untouched).
    """
    if adapter is not None and trainable is not None:
        raise ValueError("give either trainable (train some weights) or adapter (train a LoRA adapter), not both")
    X, Y = encode_examples(enc, examples, model.cfg.n_ctx)
    rng = np.random.default_rng(seed)
    if adapter is None:
        names = trainable_names(model, trainable)
        opt = AdamW(tree_flatten(model.params), lr=lr, weight_decay=weight_decay,
                    trainable=None if names is None else set(names))
    else:
        base = tree_flatten(model.params)  # never written to: each step merges into new arrays
        opt = AdamW(adapter.params, lr=lr, weight_decay=weight_decay)
        model.params = tree_unflatten(merged_params(base, adapter), model.cfg.n_layer)
    losses = []
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="fine-tune", unit="step")
    for step in it:
        idx = rng.choice(len(X), size=min(batch_size, len(X)), replace=False)
        x, y = X[idx], Y[idx]
        T = int((y >= 0).any(axis=0).nonzero()[0].max()) + 1  # drop all-padding columns
        loss, grads = model.loss_and_grads(x[:, :T], y[:, :T])
        g = tree_flatten(grads)
        opt.step(g if adapter is None else adapter_grads(g, adapter), lr=lr_at(step, lr, warmup, steps, 0.1))
        if adapter is not None:  # the model the next step (and the callback) sees
            model.params = tree_unflatten(merged_params(base, adapter), model.cfg.n_layer)
        losses.append(loss)
        if callback is not None:
            callback(step + 1, loss)
        if progress:
            it.set_postfix(loss=f"{loss:.3f}")
    return losses


def answer_tokens_unseen(model: GPT, enc, examples: list[Example]) -> list[int]:
    """Tokens of the examples' answers that pretraining never trained (``lora.unseen_tokens``):
    for the course model, ``<``, ``=``, ``>``, ``/`` and ``#``, which Shakespeare never wrote."""
    used = {t for ex in examples for t in enc.encode_ordinary(ex.target())}
    return sorted(used & set(unseen_tokens(model)))


# ---------------------------------------------------------------------- the shipped fine-tuned model
def finetuned_dir() -> Path:
    """engine/assets/shakespeare-html: the shipped adapter (adapter.safetensors, adapter.json)."""
    return Path(str(resources.files("engine") / "assets" / ASSET))


def load_finetuned(path=None):
    """(fine-tuned GPT, encoding, Adapter): the course model with the shipped adapter merged in."""
    base, enc = _load_model("shakespeare", need_tokenizer=True)
    adapter = load_adapter(finetuned_dir() if path is None else path, base)
    return merge(base, adapter), enc, adapter


# ---------------------------------------------------------------------- the whole comparison
def training_words(enc, words: str = "vocab+pieces", seed: int = 0) -> list[str]:
    """The extra training words of a ``WORD_SETS`` name (the task's own 57 are always in)."""
    if words not in WORD_SETS:
        raise ValueError(f"words must be one of {WORD_SETS}, got {words!r}")
    return {"task": lambda: [], "vocab": lambda: vocab_words(enc),
            "vocab+random": lambda: vocab_words(enc) + random_words(1500, seed),
            "vocab+pieces": lambda: vocab_words(enc) + piece_words(enc, 1500, seed)}[words]()



def compare(model: GPT, enc, steps: int = 60, lr: float = 1e-3, trainable=None, shots: int = 3, seed: int = 0,
            n_test: int | None = None, progress: bool = False, log=print, words: str = "task",
            batch_size: int = 16, warmup: int = 10, lora_rank: int | None = None, lora_alpha: float = 16.0,
            lora_targets=("attn.c_attn.w", "attn.c_proj.w"), lora_rows: bool = True) -> dict:
    """Accuracy on held-out words: zero-shot, few-shot (same model, ``shots`` demonstrations),
    then after fine-tuning. The model is fine-tuned in place.

    words: "task" (the 57 training words), "vocab" (also ``vocab_words(enc)``) or "vocab+random" (and
    1,500 made-up words, ``random_words``) or "vocab+pieces" (and 1,500 words glued from
    vocabulary pieces, ``piece_words``); lora_rank: train
    a LoRA adapter of that rank on ``lora_targets`` instead of the weights (``result["adapter"]``);
    with ``lora_rows`` it also trains the embedding rows of the answers' tokens the model never saw
    (``answer_tokens_unseen``).
    """
    train, test = train_test_split(seed, more_words=training_words(enc, words, seed))
    if n_test is not None:
        test = test[:: max(1, len(test) // n_test)][:n_test]
    demos = train[:shots]
    t0 = time.time()
    zero, zero_out = evaluate(model, enc, test, return_outputs=True)
    few, few_out = evaluate(model, enc, test, shots=demos, return_outputs=True) if shots else (zero, zero_out)
    log(f"before fine-tuning: exact match zero-shot {zero:.0%}, {shots}-shot {few:.0%} on {len(test)} held-out "
        f"examples (right template: {_form(zero_out):.0%}, {_form(few_out):.0%})")
    adapter = None if lora_rank is None else init_adapter(
        model, lora_rank, lora_alpha, lora_targets, seed=seed,
        rows=answer_tokens_unseen(model, enc, train) if lora_rows else ())
    t1 = time.time()
    losses = finetune(model, enc, train, steps=steps, lr=lr, trainable=trainable, seed=seed, progress=progress,
                      batch_size=batch_size, warmup=warmup, adapter=adapter)
    t_train = time.time() - t1
    after, after_out = evaluate(model, enc, test, return_outputs=True)
    per = by_template(after_out)
    log(f"after {steps} fine-tuning steps on {len(train)} examples ({t_train:.0f} s): exact match {after:.0%} "
        f"(per template {', '.join(f'{a:.0%}' for a in per)}), right template {_form(after_out):.0%} "
        f"(loss {losses[0]:.2f} -> {np.mean(losses[-20:]):.2f}), {time.time() - t0:.0f} s in all")
    wrong = [f"{o[0].description!r} -> {o[1].strip()!r}" for o in after_out if not o[2]]
    if wrong:
        log(f"wrong ({len(wrong)}): " + "; ".join(wrong[:12]))
    return {"zero_shot": zero, "few_shot": few, "finetuned": after, "zero_shot_form": _form(zero_out),
            "few_shot_form": _form(few_out), "finetuned_form": _form(after_out), "losses": losses,
            "shots": shots, "n_test": len(test), "steps": steps, "per_template": per, "n_train": len(train),
            "train_seconds": t_train, "adapter": adapter,
            "outputs": [(o[0].description, o[1]) for o in after_out]}


# ---------------------------------------------------------------------- command line
def add_finetune_arguments(p):
    """Arguments of ``python -m engine finetune``."""
    p.add_argument("--checkpoint", default="shakespeare",
                   help="'shakespeare' (the shipped model) or a checkpoint directory written by train")
    p.add_argument("--recipe", choices=["html"], default=None,
                   help="'html': the recipe of the shipped adapter (engine.finetune.RECIPE), overriding the rest")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--words", choices=WORD_SETS, default="task",
                   help="training words: the task's 57, also every word of the tokenizer's vocabulary, "
                        "and also 1,500 made-up words")
    p.add_argument("--trainable", nargs="*", default=None,
                   help="name prefixes to train (e.g. h.3. ln_f.); default: every parameter")
    p.add_argument("--lora-rank", type=int, default=None, help="train a LoRA adapter of this rank instead")
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", nargs="*", default=["attn.c_attn.w", "attn.c_proj.w"])
    p.add_argument("--lora-no-rows", action="store_true",
                   help="do not train the embedding rows of the answers' never-seen tokens")
    p.add_argument("--shots", type=int, default=3, help="demonstrations in the few-shot comparison")
    p.add_argument("--n-test", type=int, default=20, help="held-out examples to evaluate (all: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the fine-tuned model here (a checkpoint directory)")
    p.add_argument("--adapter-out", default=None, help="save the LoRA adapter here (adapter.safetensors + .json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model or adapter already in --out / --adapter-out (without it they are refused)")
    p.add_argument("--no-progress", action="store_true")
    return p


def load_model(source: str):
    """(GPT, encoding) from 'shakespeare' (shipped) or a checkpoint directory (``loading.load_model``)."""
    return _load_model(source, need_tokenizer=True)


MODEL_FILES = ("model.safetensors", "state.json", "manifest.json")  # a checkpoint folder holds these
ADAPTER_FILES = ("adapter.safetensors", "adapter.json")


def check_outputs(out, adapter_out, overwrite: bool = False) -> None:
    """Refuse, before minutes of fine-tuning, the outputs that could not be written or would silently
    replace earlier work: a file where a folder is wanted, a folder that cannot be written to, or one
    that already holds a model (``out``) or an adapter (``adapter_out``) unless ``overwrite``.
    Raises SystemExit with a one-line message."""
    for path, files, what in ((out, MODEL_FILES, "a model"), (adapter_out, ADAPTER_FILES, "an adapter")):
        if path is None:
            continue
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise SystemExit(f"{path} is a file; give a folder to save {what} in")
        found = [f for f in files if (path / f).exists() or (path / f).is_symlink()]
        if found and not overwrite:
            raise SystemExit(f"{path} already holds {what} ({', '.join(found)}): pass --overwrite to replace it, "
                             "or give another folder")
        folder = path if path.is_dir() else next(p for p in path.parents if p.exists())
        try:
            check_writable(folder)
        except OSError as e:
            raise SystemExit(str(e)) from None
    if out is not None and adapter_out is not None and Path(out).resolve() == Path(adapter_out).resolve():
        raise SystemExit("--out and --adapter-out name the same folder; give each its own")


def run_finetune(args) -> dict:
    """``python -m engine finetune``: zero-shot, few-shot, fine-tune, evaluate, optionally save."""
    if args.recipe == "html":
        for k, v in RECIPE.items():
            setattr(args, k, v)
        args.n_test, args.trainable = 0, None
    if args.adapter_out and args.lora_rank is None:
        raise SystemExit("--adapter-out needs --lora-rank (or --recipe html)")
    check_outputs(args.out, args.adapter_out, getattr(args, "overwrite", False))
    model, enc = load_model(args.checkpoint)
    result = compare(model, enc, steps=args.steps, lr=args.lr, trainable=args.trainable, shots=args.shots,
                     seed=args.seed, n_test=args.n_test or None, progress=not args.no_progress, words=args.words,
                     batch_size=args.batch_size, warmup=args.warmup, lora_rank=args.lora_rank,
                     lora_alpha=args.lora_alpha, lora_targets=tuple(args.lora_targets),
                     lora_rows=not args.lora_no_rows)
    summary = {k: v for k, v in result.items() if k not in ("losses", "outputs", "adapter")}
    if args.out:
        state = {"config": model.cfg.to_dict(), "finetune": summary, "losses": result["losses"],
                 "source": args.checkpoint}
        p = save_checkpoint(args.out, model.state_dict(), state, enc=enc)
        print(f"saved the fine-tuned model to {p}")
    if args.adapter_out:
        ad = result["adapter"]
        recipe = {k: getattr(args, k) for k in RECIPE}
        ad.meta = {"recipe": recipe, "result": summary, "losses": [round(float(x), 4) for x in result["losses"]],
                   "source": args.checkpoint}
        print(f"saved the adapter ({ad.n_params():,} parameters) to {save_adapter(args.adapter_out, ad)}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m engine.finetune", description="Fine-tune a pretrained GPT")
    add_finetune_arguments(p)
    run_finetune(p.parse_args(argv))


if __name__ == "__main__":
    main()
