"""The frames of the chapters' animations, computed with the engine (``Animation`` plays them).

Each function returns a list of ``animation.frame`` dicts; tests recompute what frame k shows with
the engine directly (``tests/test_animation.py``, and the built pages in ``tests/test_book.py``).

==========================  ===========================================================  =======
function                    what frame k shows                                           chapter
==========================  ===========================================================  =======
``generation_frames``       the text after k generated tokens, and the k-th choice        1
``window_frames``           the k-th (context -> next token) training example            2
``training_frames``         the loss so far and the guess for one context, checkpoint k  2
``bpe_frames``              a sentence cut by the first k BPE merges                     3
``parameter_frames``        GPT-3's parameters counted up to the k-th array group        4
``logit_lens_frames``       the guess read off the residual stream after layer k         5
``attention_cost_frames``   dense and banded masks and their cost for a text of k tokens 6
``kv_cache_frames``         step k of greedy generation: the KV cache, work with/without 7
``AnswerRecorder``          the answer to one description after k fine-tuning steps      8
==========================  ===========================================================  =======
"""
from __future__ import annotations

import numpy as np

from ..attention import attention_mask
from ..backend import to_numpy
from ..bpe import bpe_merges, encoding_from_merges
from ..finetune import complete, right_form
from ..generate import KVCache, forward_cached, next_token_probs
from .animation import bars, counter, frame, grid, note, series, tokens
from .sliding_window import sliding_window_examples


def piece(enc, i: int) -> str:
    """Token ``i`` as text (a piece of a multi-byte character shows as the replacement sign)."""
    return enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace")


def _top(p, k: int, enc, mark: int | None = None, mark_role: str = "new", vmax: float = 1.0, key: str = "guesses",
         label: str = ""):
    """Bars of the ``k`` most likely tokens of p (V,), ``mark`` highlighted (and added if not among them)."""
    top = [int(i) for i in np.argsort(-p, kind="stable")[:k]]
    if mark is not None and mark not in top:
        top.append(int(mark))
    return bars(key, [(piece(enc, i), float(p[i]), f"{p[i]:.3f}", mark_role if i == mark else "rest")
                      for i in top], vmax=vmax, label=label)


# ---------------------------------------------------------------------- chapter 1
def generation_frames(model, enc, prompt: str, n_new: int, temperature: float = 1.0, top_k=None, top_p=None,
                      seed=None, k: int = 5) -> list[dict]:
    """The model writing ``n_new`` tokens after ``prompt``, each one appended to its input.

    Frame 0 is the prompt; frame s (1..n_new) the text after s tokens, with the sampling
    distribution of step s (its ``k`` most likely tokens and the one drawn). The tokens are
    those of ``model.generate`` with the same arguments.
    """
    ids = [int(i) for i in enc.encode(prompt)]
    seq = list(ids)

    def row():
        return tokens("text", [(piece(enc, t), "prompt" if s < len(ids) else
                                ("new" if s == len(seq) - 1 else "generated")) for s, t in enumerate(seq)],
                      label="the model's input")

    out = [frame(f"The prompt: {len(ids)} tokens. The model reads them all and predicts the next one.",
                 row(), counter("length", "tokens in the input", len(seq)))]
    stream = model.generate_stream(np.array(ids), n_new, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    for s, nxt in enumerate(stream, start=1):
        logits = to_numpy(model.forward(np.array(seq)))[-1]
        p = next_token_probs(logits, temperature, top_k, top_p) if temperature > 0 else next_token_probs(logits)
        seq.append(int(nxt))
        out.append(frame(f"Step {s}: from {len(seq) - 1} tokens the model picks {piece(enc, nxt)!r}, "
                         "which joins the input for the next step.", row(),
                         counter("length", "tokens in the input", len(seq)),
                         _top(p, k, enc, mark=int(nxt), label="the next token's probabilities (the drawn one in orange)")))
    return out


# ---------------------------------------------------------------------- chapter 2
def window_frames(words, context: int) -> list[dict]:
    """The window sliding over ``words``: frame t-1 is the example (up to ``context`` words -> word t)."""
    words = list(words)
    out = []
    for t, (ctx, target) in enumerate(sliding_window_examples(words, context), start=1):
        roles = ["context" if t - len(ctx) <= s < t else ("target" if s == t else "rest") for s in range(len(words))]
        out.append(frame(f"Example {t}: the model sees {len(ctx)} word(s) and must predict {target!r}.",
                         tokens("window", list(zip(words, roles))),
                         note("example", f"{' '.join(ctx)}  \u2192  {target}"),
                         counter("examples", "examples so far", t)))
    return out


def training_frames(trainer, enc, context_ids, target: int, every: int = 10, k: int = 5) -> list[dict]:
    """Run ``trainer`` to its ``max_steps`` in chunks of ``every`` steps, recording a frame at each
    checkpoint (step 0 included): the training loss so far, and the model's ``k`` most likely
    next tokens after ``context_ids`` with the right one (``target``) marked.
    """
    if every < 1:
        raise ValueError(f"every must be a positive number of steps, got {every!r}")
    end = trainer.tc.max_steps
    ctx = np.asarray(context_ids)
    text = enc.decode([int(i) for i in ctx])
    y_max = float(np.log(trainer.model.cfg.vocab_size)) * 1.1
    out = []
    while True:
        p = next_token_probs(to_numpy(trainer.model.forward(ctx))[-1])
        best = int(p.argmax())
        loss = list(trainer.history.get("loss", []))
        verdict = "right" if best == target else "wrong"
        out.append(frame(f"Step {trainer.step}: after {text!r} the model's best guess is {piece(enc, best)!r} "
                         f"({verdict}; the text says {piece(enc, target)!r}, p = {p[target]:.3f}).",
                         counter("step", "training steps", int(trainer.step)),
                         series("loss", {"training loss": loss}, end, 0.0, y_max, label="training loss (nats per token)"),
                         _top(p, k, enc, mark=int(target), mark_role="target",
                              label=f"the next token after {text!r} (the right one in orange)")))
        if trainer.step >= end:
            return out
        trainer.run(progress=False, stop_at=min(end, trainer.step + every))


# ---------------------------------------------------------------------- chapter 3
def bpe_frames(text: str, sample: str, n_merges: int) -> list[dict]:
    """``sample`` cut into tokens after 0, 1, ..., ``n_merges`` merges learned on ``text``.

    Frame k uses ``encoding_from_merges(bpe_merges(text, n_merges)[:k])``; the tokens merge k
    created are marked "new".
    """
    merges = bpe_merges(text, n_merges)
    out = []
    for k in range(len(merges) + 1):
        enc = encoding_from_merges(merges[:k])
        pieces = [enc.decode_single_token_bytes(i) for i in enc.encode(sample)]
        made = merges[k - 1][0] + merges[k - 1][1] if k else None
        roles = ["new" if p == made else ("even" if s % 2 == 0 else "odd") for s, p in enumerate(pieces)]
        if k:
            a, b = (x.decode("utf-8", "replace") for x in merges[k - 1])
            cap = f"Merge {k}: the most frequent pair {a!r} + {b!r} becomes one token {a + b!r}."
        else:
            cap = "Before any merge: one token per byte."
        out.append(frame(cap, tokens("pieces", [(p.decode("utf-8", "replace"), r) for p, r in zip(pieces, roles)]),
                         counter("n_tokens", "tokens for the sentence", len(pieces)),
                         counter("vocab", "vocabulary", 256 + k)))
    return out


# ---------------------------------------------------------------------- chapter 4
LAYER_PARTS = (("ln_1", "LayerNorm 1"), ("attn.c_attn", "attention: queries, keys, values"),
               ("attn.c_proj", "attention: output"), ("ln_2", "LayerNorm 2"), ("mlp.c_fc", "MLP: up"),
               ("mlp.c_proj", "MLP: down"))


def parameter_groups(cfg) -> list[tuple[str, int]]:
    """``cfg.param_shapes()`` in the order frames count them: (what, parameters): the embeddings,
    layer 0 part by part (``LAYER_PARTS``), every other layer whole, the final LayerNorm."""
    sizes = {n: int(np.prod(s)) for n, s in cfg.param_shapes().items()}

    def total(prefix):
        return sum(v for n, v in sizes.items() if n.startswith(prefix))

    groups = [("embeddings (wte, wpe)", sizes["wte"] + sizes["wpe"])]
    groups += [(f"layer 1: {label}", total(f"h.0.{p}.")) for p, label in LAYER_PARTS]
    groups += [(f"layer {i + 1}", total(f"h.{i}.")) for i in range(1, cfg.n_layer)]
    groups.append(("final LayerNorm (ln_f)", total("ln_f.")))
    return groups


def parameter_frames(cfg, cols: int = 12) -> list[dict]:
    """GPT-3's parameters counted as they fill the model: frame k has counted the first k + 1
    ``parameter_groups``; the last frame's count is ``cfg.n_params()``."""
    groups = parameter_groups(cfg)
    parts = groups[1:1 + len(LAYER_PARTS)]
    per_layer = sum(v for _, v in parts)
    rows = -(-cfg.n_layer // cols)
    out, done = [], 0
    for k, (what, size) in enumerate(groups):
        done += size
        layers_done = 0 if k == 0 else (1 if k <= len(LAYER_PARTS) else min(cfg.n_layer, k - len(LAYER_PARTS) + 1))
        current = layers_done - 1 if 0 < k < len(groups) - 1 else -1
        cells = "".join("o" if i == current else ("#" if i < layers_done else ".") for i in range(rows * cols))
        cells = "".join(c if i < cfg.n_layer else " " for i, c in enumerate(cells))
        part_roles = [("current" if j == k - 1 else ("done" if j < k - 1 else "todo")) if k <= len(LAYER_PARTS)
                      else "done" for j in range(len(parts))]
        out.append(frame(f"{what}: {size:,} parameters.",
                         counter("params", "parameters counted", done),
                         grid("layers", [cells[r * cols:(r + 1) * cols] for r in range(rows)],
                              {"#": ("done", "counted"), "o": ("current", "counting"), ".": ("todo", "to come")},
                              label=f"the {cfg.n_layer} layers"),
                         bars("layer", [(lab.split(": ", 1)[-1], v, f"{v:,}", r) for (lab, v), r in zip(parts, part_roles)],
                              vmax=max(v for _, v in parts), label=f"inside one layer: {per_layer:,} parameters")))
    return out


# ---------------------------------------------------------------------- chapter 5
def logit_lens_frames(model, enc, ids, position: int = -1, k: int = 5, cols: int = 8) -> list[dict]:
    """The token at ``position`` rising through the stack: frame s is the logit lens after the
    embedding (s = 0) or after layer s - 1: its ``k`` best next-token guesses, and where it is."""
    ids = [int(i) for i in ids]
    xr = model.forward(np.array(ids), return_residuals=True)
    norms = xr.residual_norms()
    pos = position % len(ids)
    n = model.cfg.n_layer
    out = []
    for s, logits in enumerate(xr.logit_lens()):
        p = next_token_probs(to_numpy(logits)[pos])
        best = int(p.argmax())
        stage = "the embedding" if s == 0 else f"layer {s} of {n}"
        stack = ["".join("o" if r == s else ("#" if r < s else ".") for _ in range(cols)) for r in range(n, -1, -1)]
        out.append(frame(f"After {stage}: read now, the guess for the next token is {piece(enc, best)!r} "
                         f"(p = {p[best]:.2f}).",
                         tokens("prompt", [(piece(enc, t), "current" if j == pos else "prompt") for j, t in enumerate(ids)]),
                         grid("stack", stack, {"o": ("current", "here"), "#": ("done", "passed"), ".": ("todo", "above")},
                              label="top: last layer; bottom: the embedding"),
                         counter("norm", "length of the residual vector", float(norms[s, pos]), f"{norms[s, pos]:.1f}"),
                         _top(p, k, enc, mark=None, label="the logit lens: next-token guesses at this height")))
    return out


# ---------------------------------------------------------------------- chapter 6
def attention_cost_frames(T_max: int, window: int, kinds=("dense", "banded")) -> list[dict]:
    """The text growing from 1 to ``T_max`` tokens: frame T-1 shows each layout's mask for T
    tokens and the scores it computes (``attention_mask(kind, T, window=window).sum()``)."""
    out, history = [], {kind: [] for kind in kinds}
    for T in range(1, T_max + 1):
        items = []
        for kind in kinds:
            m = attention_mask(kind, T, window=window)
            cost = int(m.sum())
            history[kind].append(cost)
            rows = ["".join(("#" if m[i, j] else ".") if i < T and j <= i else " " for j in range(T_max))
                    for i in range(T_max)]
            items.append(grid(kind, rows, {"#": (kind, "scored"), ".": ("todo", "skipped")},
                              label=f"{kind}{f' (window {window})' if kind == 'banded' else ''}: query rows, key columns"))
            items.append(counter(f"{kind}_cost", f"{kind}: scores computed", cost))
        items.append(series("costs", {k: v for k, v in history.items()}, T_max, 0, T_max * (T_max + 1) / 2,
                            label="scores computed as the text grows", x_label="tokens"))
        costs = ", ".join(f"{kind} {history[kind][-1]:,}" for kind in kinds)
        out.append(frame(f"{T} token(s): {costs} scores.", *items))
    return out


# ---------------------------------------------------------------------- chapter 7
def kv_cache_frames(model, enc, prompt: str, n_new: int) -> list[dict]:
    """Greedy generation step by step with a real ``KVCache``: frame s (1..n_new) shows the text,
    the cache's filled positions per layer, its bytes in use, and how many positions each step runs
    through the network with the cache (the new token; the whole prompt at first) and without it
    (the whole prefix again). The tokens are ``model.generate(..., temperature=0)``'s."""
    cfg = model.cfg
    seq = [int(i) for i in enc.encode(prompt)]
    n0 = len(seq)
    if n0 + n_new > cfg.n_ctx:
        raise ValueError(f"prompt ({n0} tokens) + n_new ({n_new}) exceeds the context n_ctx = {cfg.n_ctx}")
    cache = KVCache(model, 1)
    width = n0 + n_new
    done = {"with the cache": [], "without": []}
    out = []
    for s in range(1, n_new + 1):
        before = cache.length
        new = list(seq) if before == 0 else seq[-1:]
        logits = to_numpy(forward_cached(model, model.xp.asarray([new]), cache))[0]
        seq.append(int(logits.argmax()))
        for key, n in (("with the cache", len(new)), ("without", len(seq) - 1)):
            done[key].append((done[key][-1] if done[key] else 0) + n)
        used = int(cache.k[:, :, :, :cache.length].nbytes + cache.v[:, :, :, :cache.length].nbytes)
        rows = ["".join("#" if j < before else ("n" if j < cache.length else ".") for j in range(width))
                for _ in range(cfg.n_layer)]
        out.append(frame(f"Step {s}: the network runs on {len(new)} position(s) with the cache, "
                         f"{len(seq) - 1} without; it writes {piece(enc, seq[-1])!r}.",
                         tokens("text", [(piece(enc, t), "prompt" if j < n0 else ("new" if j == len(seq) - 1 else "generated"))
                                         for j, t in enumerate(seq)]),
                         grid("cache", rows, {"#": ("done", "cached"), "n": ("new", "added this step"),
                                              ".": ("todo", "empty")},
                              label=f"the KV cache: {cfg.n_layer} layers (rows) x positions (columns)"),
                         counter("cache_bytes", "cache in use", used, f"{used / 1e3:,.1f} kB"),
                         counter("positions", "positions run this step (with / without the cache)",
                                 len(new), f"{len(new)} / {len(seq) - 1}"),
                         series("work", {k: v for k, v in done.items()}, n_new, 0, n_new * (n0 + (n0 + n_new)) / 2,
                                label="positions run so far")))
    return out


# ---------------------------------------------------------------------- chapter 8
class AnswerRecorder:
    """A ``finetune(..., callback=)`` that records the model's answer to one example after every
    ``every`` steps (and before training): ``frames`` for ``Animation``.

    Frame 0 is the answer before fine-tuning; each later frame the answer after that step, the
    loss so far, and whether the answer is exactly right, of the right form (``right_form``), or wrong.
    """

    def __init__(self, model, enc, example, steps: int, every: int = 1, max_new_tokens: int = 24):
        self.model, self.enc, self.example, self.steps, self.every = model, enc, example, steps, every
        self.max_new_tokens = max_new_tokens
        self.losses: list[float] = []
        self.frames: list[dict] = []
        self._record(0)

    def answer(self) -> str:
        return complete(self.model, self.enc, self.example.prompt(), self.max_new_tokens)

    def _record(self, step: int):
        got = self.answer()
        want = self.example.target()
        verdict = ("right", "exactly right") if got == want else (
            ("new", "the right form, not the right word") if right_form(self.example, got) else ("wrong", "wrong"))
        self.frames.append(frame(
            f"{'Before fine-tuning' if step == 0 else f'After step {step}'}: the answer is {verdict[1]}.",
            note("description", self.example.prompt()),
            tokens("answer", [(got.strip() or "(nothing)", verdict[0])], label="the model's answer (greedy)"),
            note("expected", f"expected: {want.strip()}"),
            counter("step", "fine-tuning steps", step),
            series("loss", {"loss on the answers": self.losses}, self.steps, 0,
                   float(np.log(self.model.cfg.vocab_size)), label="fine-tuning loss (nats per token)")))

    def __call__(self, step: int, loss: float):
        self.losses.append(float(loss))
        if step % self.every == 0 or step == self.steps:
            self._record(step)
