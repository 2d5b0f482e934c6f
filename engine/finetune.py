"""Chapter 8, Fine-tuning: teach a pretrained model a small task, and compare with few-shot prompting.

The task, in the spirit of the GPT-3 demos that turned a description into UI code:
``an input that says "search"`` -> ``<input type="text" placeholder="search">``.
``make_dataset`` generates such pairs from a handful of templates and words, with
the test words kept apart from the training words, so accuracy measures whether
the model learned the pattern rather than the pairs.

Every example is written in one format, also used for few-shot prompts
(Brown et al. 2020 call a task demonstration in the prompt "in-context learning")::

    [example] an input that says "search" [toCode] <input type="text" placeholder="search">

Fine-tuning trains on whole lines but scores only the code after ``[toCode]`` (the
description's tokens get target -1). Accuracy is exact match of the greedy
continuation up to the end of the line.
"""
from __future__ import annotations

import argparse
import random
import re
import time
from dataclasses import dataclass

import numpy as np

from .checkpoint import save_checkpoint
from .loading import load_model as _load_model
from .model import GPT, tree_flatten
from .optim import AdamW, lr_at

TEMPLATES = [
    ('an input that says "{w}"', '<input type="text" placeholder="{w}">'),
    ('a button that says "{w}"', "<button>{w}</button>"),
    ('a heading that says "{w}"', "<h1>{w}</h1>"),
    ('a link that says "{w}"', '<a href="#">{w}</a>'),
    ('a checkbox labelled "{w}"', '<label><input type="checkbox"> {w}</label>'),
]
# Words that could label a control. Many of them, so that fine-tuning cannot just memorise pairs:
# it has to learn to copy the quoted word into the code.
WORDS = ["search", "name", "email", "submit", "login", "password", "cancel", "next", "back", "city",
         "home", "help", "save", "open", "close", "music", "phone", "price", "title", "date",
         "country", "message", "start", "stop", "menu", "send", "order", "king", "queen", "love",
         "time", "day", "night", "world", "heart", "word", "house", "friend", "father", "mother",
         "sword", "crown", "letter", "money", "land", "sea", "fire", "water", "light", "book",
         "play", "song", "door", "gold", "lord", "lady", "field", "horse", "town", "news",
         "hand", "head", "name", "life", "death", "power", "peace", "war", "truth", "honour"]
WORDS = list(dict.fromkeys(WORDS))  # unique, in order
TEST_WORDS = WORDS[::6]  # every sixth word is never seen in fine-tuning
TRAIN_WORDS = [w for w in WORDS if w not in TEST_WORDS]
SEP = " [toCode] "
PREFIX = "[example] "
END = "\n"


@dataclass
class Example:
    description: str
    code: str

    def prompt(self) -> str:
        """The text the model continues: ``[example] <description> [toCode]``."""
        return f"{PREFIX}{self.description}{SEP.rstrip()}"

    def target(self) -> str:
        """What a correct model writes after the prompt (a space, the code, the end of the line)."""
        return f" {self.code}{END}"

    def line(self) -> str:
        return self.prompt() + self.target()


def make_dataset(words=None, templates=None) -> list[Example]:
    """Every (template, word) pair as an ``Example``. Default: the training words."""
    words = TRAIN_WORDS if words is None else words
    templates = TEMPLATES if templates is None else templates
    return [Example(d.format(w=w), c.format(w=w)) for d, c in templates for w in words]


def train_test_split(seed: int = 0, unseen_words: bool = True):
    """(train examples, test examples), no pair in both.

    Default: the test words never appear in training (``TEST_WORDS``). With
    ``unseen_words=False`` every word is held out with one template (word i with template
    i mod 5) and seen with the others: a test pair is a new combination of known parts.
    """
    if unseen_words:
        train, test = make_dataset(TRAIN_WORDS), make_dataset(TEST_WORDS)
    else:
        train, test = [], []
        for i, w in enumerate(WORDS):
            for j, (d, c) in enumerate(TEMPLATES):
                (test if j == i % len(TEMPLATES) else train).append(Example(d.format(w=w), c.format(w=w)))
    random.Random(seed).shuffle(train)
    return train, test


def few_shot_prompt(query: Example, shots: list[Example]) -> str:
    """k demonstrations, one per line, then the query's prompt."""
    return "".join(s.line() for s in shots) + query.prompt()


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


def right_form(ex: Example, got: str) -> bool:
    """Is ``got`` the code of the right template, whatever word it holds? (Partial credit: the
    model may learn the shape of the answer before it learns to copy the word.)"""
    for d, c in TEMPLATES:
        pattern = "^" + re.escape(c).replace(re.escape("{w}"), '[^<>"]+') + "$"
        if re.match(pattern, ex.code) and re.match("^" + re.escape(d).replace(re.escape("{w}"), ".+") + "$",
                                                    ex.description):
            return re.match(pattern, got.strip()) is not None
    return False


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


def _form(outputs) -> float:
    return sum(o[3] for o in outputs) / max(1, len(outputs))


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
        x = ids[:-1]
        y = [-1] * (len(p) - 1) + a
        rows.append(x)
        tgts.append(y)
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
             workers: int = 1, callback=None) -> list[float]:
    """Fine-tune ``model`` in place on ``examples``; returns the loss of every step.

    callback: called as ``callback(step, loss)`` after each step (step 1, 2, ...), e.g. to record
    the model's answers as it learns (``engine.widgets.frames.AnswerRecorder``).

    trainable: None (every parameter), name prefixes such as ``["h.3.", "ln_f."]``, or a predicate;
    the other parameters stay frozen (AdamW keeps no state for them).
    """
    X, Y = encode_examples(enc, examples, model.cfg.n_ctx)
    names = trainable_names(model, trainable)
    flat = tree_flatten(model.params)
    opt = AdamW(flat, lr=lr, weight_decay=weight_decay, trainable=None if names is None else set(names))
    rng = np.random.default_rng(seed)
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
        opt.step(g, lr=lr_at(step, lr, warmup, steps, 0.1))
        losses.append(loss)
        if callback is not None:
            callback(step + 1, loss)
        if progress:
            it.set_postfix(loss=f"{loss:.3f}")
    return losses


# ---------------------------------------------------------------------- the whole comparison
def compare(model: GPT, enc, steps: int = 60, lr: float = 1e-3, trainable=None, shots: int = 3, seed: int = 0,
            n_test: int | None = None, progress: bool = False, log=print) -> dict:
    """Accuracy on held-out words: zero-shot, few-shot (same model, ``shots`` demonstrations),
    then after fine-tuning. The model is fine-tuned in place."""
    train, test = train_test_split(seed)
    if n_test is not None:
        test = test[:: max(1, len(test) // n_test)][:n_test]
    demos = train[:shots]
    t0 = time.time()
    zero, zero_out = evaluate(model, enc, test, return_outputs=True)
    few, few_out = evaluate(model, enc, test, shots=demos, return_outputs=True)
    log(f"before fine-tuning: exact match zero-shot {zero:.0%}, {shots}-shot {few:.0%} on {len(test)} held-out "
        f"examples (right template: {_form(zero_out):.0%}, {_form(few_out):.0%})")
    losses = finetune(model, enc, train, steps=steps, lr=lr, trainable=trainable, seed=seed, progress=progress)
    after, after_out = evaluate(model, enc, test, return_outputs=True)
    log(f"after {steps} fine-tuning steps: exact match {after:.0%}, right template {_form(after_out):.0%} "
        f"(loss {losses[0]:.2f} -> {losses[-1]:.2f}), {time.time() - t0:.0f} s")
    return {"zero_shot": zero, "few_shot": few, "finetuned": after, "zero_shot_form": _form(zero_out),
            "few_shot_form": _form(few_out), "finetuned_form": _form(after_out), "losses": losses,
            "shots": shots, "n_test": len(test), "steps": steps,
            "outputs": [(o[0].description, o[1]) for o in after_out]}


# ---------------------------------------------------------------------- command line
def add_finetune_arguments(p):
    """Arguments of ``python -m engine finetune``."""
    p.add_argument("--checkpoint", default="shakespeare",
                   help="'shakespeare' (the shipped model) or a checkpoint directory written by train")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--trainable", nargs="*", default=None,
                   help="name prefixes to train (e.g. h.3. ln_f.); default: every parameter")
    p.add_argument("--shots", type=int, default=3, help="demonstrations in the few-shot comparison")
    p.add_argument("--n-test", type=int, default=20, help="held-out examples to evaluate (all: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the fine-tuned model here (a checkpoint directory)")
    p.add_argument("--no-progress", action="store_true")
    return p


def load_model(source: str):
    """(GPT, encoding) from 'shakespeare' (shipped) or a checkpoint directory (``loading.load_model``)."""
    return _load_model(source, need_tokenizer=True)


def run_finetune(args) -> dict:
    """``python -m engine finetune``: zero-shot, few-shot, fine-tune, evaluate, optionally save."""
    model, enc = load_model(args.checkpoint)
    result = compare(model, enc, steps=args.steps, lr=args.lr, trainable=args.trainable, shots=args.shots,
                     seed=args.seed, n_test=args.n_test or None, progress=not args.no_progress)
    if args.out:
        state = {"config": model.cfg.to_dict(),
                 "finetune": {k: v for k, v in result.items() if k not in ("losses", "outputs")},
                 "losses": result["losses"], "source": args.checkpoint}
        p = save_checkpoint(args.out, model.state_dict(), state, enc=enc)
        print(f"saved the fine-tuned model to {p}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m engine.finetune", description="Fine-tune a pretrained GPT")
    add_finetune_arguments(p)
    run_finetune(p.parse_args(argv))


if __name__ == "__main__":
    main()
