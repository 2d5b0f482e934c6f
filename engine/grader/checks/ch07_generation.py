"""Chapter 7, Generation: softmax with temperature, top-k, top-p, a greedy loop with a KV cache."""
from __future__ import annotations

import numpy as np

from ...generate import next_token_probs, softmax as ref_softmax
from ..tasks import task
from ..runner import Fail, as_array, call, close
from ._util import matches, tiny_model

CH = "07_generation"

# ---------------------------------------------------------------------- softmax
sm = task("softmax", CH, "Softmax with temperature", "softmax")


def _sm_case(f, logits, temperature=1.0, hint=""):
    what = f"softmax(logits {logits.shape}, temperature={temperature})"
    got = call(f, logits, temperature, name="softmax", arg_names=["logits", "temperature"])
    want = ref_softmax(logits, temperature)
    z = logits / temperature
    if logits.ndim == 2 and matches(got, np.exp(z - z.max()) / np.exp(z - z.max()).sum()):
        hint = "normalise each row on its own (sum over the last axis, keepdims=True)"
    elif logits.ndim == 2 and logits.shape[0] > 1 and not matches(got, want) and _global_max_softmax(z, got):
        hint = ("subtract each row's own maximum (z.max(axis=-1, keepdims=True)), not the maximum of the "
                "whole batch: a row far below the batch's maximum underflows to 0 / 0")
    elif temperature != 1 and matches(got, ref_softmax(logits * temperature)):
        hint = "divide the logits by the temperature (you multiplied)"
    elif temperature != 1 and matches(got, ref_softmax(logits)):
        hint = "divide the logits by the temperature before exp"
    close(got, want, what, rtol=1e-6, atol=1e-12, hint=hint)


def _global_max_softmax(z, got):
    """True if ``got`` is what a softmax shifted by the batch's maximum (not each row's) gives."""
    e = np.exp(z - z.max())
    with np.errstate(all="ignore"):
        w = e / e.sum(-1, keepdims=True)
    try:
        g = np.asarray(got, dtype=np.float64)
    except Exception:
        return False
    return g.shape == w.shape and bool(np.allclose(g, w, rtol=1e-6, atol=1e-12, equal_nan=True))


@sm.part("random logits, one row and a batch of rows")
def _(f):
    rng = np.random.default_rng(50)
    for shape in [(7,), (3, 11), (1, 2)]:
        _sm_case(f, rng.standard_normal(shape) * 3)


@sm.part("huge logits (numerically stable)")
def _(f):
    rng = np.random.default_rng(51)
    _sm_case(f, np.array([1000.0, 999.0, 990.0, 1000.0]),
             hint="your softmax overflows for logits near 1000: subtract the row maximum first")
    _sm_case(f, rng.standard_normal((2, 6)) * 1000, hint="your softmax overflows for logits near 1000: subtract the row maximum first")
    _sm_case(f, np.array([-1000.0, -1001.0, -2000.0]), hint="subtract the row maximum first: exp(-1000) underflows to 0")
    # rows far apart: each row must be shifted by its own maximum
    _sm_case(f, np.array([[1000.0, 999.0, 998.0], [0.0, -1.0, 2.0], [-1000.0, -1002.0, -1001.0]]),
             hint="subtract each row's own maximum (axis=-1, keepdims=True) before exp")


@sm.part("temperature")
def _(f):
    rng = np.random.default_rng(52)
    x = rng.standard_normal((2, 9)) * 2
    for t in (0.5, 2.0, 0.05):
        _sm_case(f, x, t)


# ---------------------------------------------------------------------- top-k / top-p
def _probs_case(f, name, logits, value, want, argname, hint="", mistakes=None):
    """Compare with the reference; where probabilities tie, any choice among the tied tokens is accepted.

    ``mistakes(probs, value)`` gives (hint, how many tokens that mistake keeps) pairs: a wrong count that
    one of them reproduces gets its hint rather than ``hint``.
    """
    what = f"{name}(logits of {logits.shape[0]} tokens, {argname}={value})"
    got = as_array(call(f, logits, value, name=name, arg_names=["logits", argname]), what, want.shape)
    if got.dtype.kind not in "fiu":
        raise Fail(f"{what} returned dtype {got.dtype}; expected probabilities")
    if not np.isfinite(got).all():
        raise Fail(f"{what} returned NaN or inf; expected probabilities")
    kept_want = want > 0
    kept_got = got > 0
    if (kept_got != kept_want).any():
        n_got, n_want = int(kept_got.sum()), int(kept_want.sum())
        if n_got != n_want:
            known = mistakes(ref_softmax(logits), value) if mistakes else []
            hint = next((h for h, n in known if n != n_want and n == n_got), hint)
            raise Fail(f"{what} kept {n_got} tokens, expected {n_want}" + (f". {hint}" if hint else ""))
        probs = ref_softmax(logits)
        lo_kept, hi_dropped = probs[kept_got].min(), probs[~kept_got].max() if (~kept_got).any() else -1.0
        if not lo_kept >= hi_dropped - 1e-12 * max(hi_dropped, 1e-300):  # a tie may go either way
            raise Fail(f"{what} kept the wrong tokens: keep the most likely ones "
                       f"(ids {np.flatnonzero(kept_want)[:8].tolist()})")
        want = np.where(kept_got, probs, 0.0)
        want = want / want.sum()
    if not np.isclose(got.sum(), 1.0, atol=1e-6):
        raise Fail(f"{what}: the kept probabilities sum to {got.sum():.4f}; renormalise them to sum to 1")
    close(got, want, what, rtol=1e-6, atol=1e-12)


tk = task("top_k", CH, "Top-k", "top_k_probs")
TIES_HINT = ("keep exactly k tokens even when several tie with the k-th: rank them (np.argsort) and keep the "
             "first k, rather than keeping every token at least as likely as the k-th")


def _top_k_mistakes(probs, k):
    V = len(probs)
    kth = np.sort(probs)[::-1][min(k, V) - 1]
    return [(TIES_HINT, int((probs >= kth).sum())),
            ("you kept k + 1 tokens: np.argsort(-p)[:k] is the k most likely (check the slice's end)", min(k + 1, V)),
            ("you kept k - 1 tokens: np.argsort(-p)[:k] is the k most likely (check the slice's start)", min(k, V) - 1)]


@tk.part("random logits")
def _(f):
    rng = np.random.default_rng(53)
    for V, k in [(10, 3), (50, 7), (20, 19)]:
        x = rng.standard_normal(V) * 2
        _probs_case(f, "top_k_probs", x, k, next_token_probs(x, top_k=k), "k", mistakes=_top_k_mistakes)


@tk.part("edge cases: k = 1, k = V, k > V")
def _(f):
    rng = np.random.default_rng(54)
    x = rng.standard_normal(12)
    for k in (1, 12, 40):
        _probs_case(f, "top_k_probs", x, k, next_token_probs(x, top_k=k), "k", mistakes=_top_k_mistakes)


@tk.part("ties: exactly k tokens even when others tie with the k-th")
def _(f):
    for x, k in [(np.array([2.0, 1.0, 1.0, 1.0, 0.0, -1.0]), 2), (np.array([0.5, 3.0, 0.5, 3.0, 0.5, 0.5, -2.0]), 3),
                 (np.zeros(8), 4)]:
        _probs_case(f, "top_k_probs", x, k, next_token_probs(x, top_k=k), "k", hint=TIES_HINT,
                    mistakes=_top_k_mistakes)


tp = task("top_p", CH, "Top-p (nucleus)", "top_p_probs")
TOP_P_HINT = ("keep the smallest set of most likely tokens whose probability reaches p, including the token "
              "that crosses p")
BOUNDARY_HINT = ("when the kept tokens add up to exactly p, stop: the next token is not needed. Keep a token "
                 "only while the mass of the tokens before it is still *less than* p")


def _top_p_mistakes(probs, p):
    sp = np.sort(probs)[::-1]
    cum = np.cumsum(sp)
    dropped = ("you dropped the token that crosses p: keep the smallest set of most likely tokens whose "
               "probability reaches p, including the token that crosses p (keep a token while the mass of the "
               "tokens before it is still less than p)")
    return [(dropped, int((cum <= p).sum())), (dropped, int((cum < p).sum())),
            (BOUNDARY_HINT, int((cum - sp <= p).sum()))]


@tp.part("random logits")
def _(f):
    rng = np.random.default_rng(55)
    for V, p in [(10, 0.5), (40, 0.9), (25, 0.75)]:
        x = rng.standard_normal(V) * 2
        _probs_case(f, "top_p_probs", x, p, next_token_probs(x, top_p=p), "p", hint=TOP_P_HINT,
                    mistakes=_top_p_mistakes)


@tp.part("edge cases: tiny p keeps one token, p = 1 keeps all")
def _(f):
    rng = np.random.default_rng(56)
    x = rng.standard_normal(15) * 2
    for p in (1e-9, 1.0):
        _probs_case(f, "top_p_probs", x, p, next_token_probs(x, top_p=p), "p", hint=TOP_P_HINT,
                    mistakes=_top_p_mistakes)


@tp.part("the mass lands exactly on p")
def _(f):
    for x, p in [(np.zeros(4), 0.5), (np.zeros(8), 0.375), (np.zeros(8), 0.75)]:  # probabilities 1/4, 1/8: exact
        _probs_case(f, "top_p_probs", x, p, next_token_probs(x, top_p=p), "p", hint=BOUNDARY_HINT,
                    mistakes=_top_p_mistakes)


# ---------------------------------------------------------------------- greedy loop with a KV cache
gr = task("greedy_generate", CH, "A greedy loop with a KV cache", "greedy_generate")


class _CountingWPE(np.ndarray):
    """wpe that records how many positions are embedded: one per step with a cache, all of them without."""

    def __getitem__(self, key):
        rec = self.__dict__.get("record")
        if rec is not None and isinstance(key, slice):
            rec.append(len(range(*key.indices(self.shape[0]))))
        return np.asarray(super().__getitem__(key))


def _greedy_case(f, model, prompt, n_new, rec=None):
    what = f"greedy_generate(model, prompt of {len(prompt)} tokens, n_new={n_new})"
    got = call(f, model, prompt, n_new, name="greedy_generate", arg_names=["model", "prompt", "n_new"], timeout=30,
               may_mutate=True)
    used = sum(rec) if rec is not None else 0  # positions the learner's loop embedded
    want = model.generate(np.asarray(prompt), n_new, temperature=0)
    got = as_array(got, what)
    if got.ndim != 1:
        raise Fail(f"{what} returned shape {got.shape}; return one 1-D list: the prompt followed by the new tokens")
    if got.shape[0] == n_new and n_new != len(want):
        raise Fail(f"{what} returned only the {n_new} new tokens; return the prompt followed by them "
                   f"({len(want)} tokens)")
    if abs(got.shape[0] - len(want)) == 1:
        more = "one token too many" if got.shape[0] > len(want) else "one token too few"
        raise Fail(f"{what} returned {got.shape[0]} tokens, {more}: the prompt ({len(prompt)}) followed by exactly "
                   f"n_new = {n_new} new ones (check the loop's range)")
    hint = "take the argmax of the last position's logits at every step"
    if n_new and got.shape == want.shape and not np.array_equal(got, want) and \
            np.array_equal(got, _greedy_from(model, prompt, n_new, 0)):
        hint = ("you took the argmax of position 0's logits, the prediction after the first prompt token: take the "
                "argmax of the last position's logits (logits[-1]), which predict the next token")
    close(got.astype(np.int64), want, what, hint=hint)
    return used


def _greedy_from(model, prompt, n_new, position):
    """Greedy decoding that reads the logits of ``position`` (a mistake when it is not -1), without a cache."""
    seq = list(prompt)
    for _ in range(n_new):
        seq.append(int(np.argmax(model.forward(np.asarray(seq[-model.cfg.n_ctx:]))[position])))
    return np.asarray(seq)


@gr.part("matches the engine's greedy output", points=2)
def _(f):
    model = tiny_model(57, n_ctx=24)
    rng = np.random.default_rng(57)
    for T, n in [(3, 8), (1, 5), (6, 12)]:
        _greedy_case(f, model, [int(i) for i in rng.integers(0, model.cfg.vocab_size, T)], n)


@gr.part("uses the cache: one new position per step")
def _(f):
    model = tiny_model(58, n_ctx=24)
    rec: list = []
    wpe = model.params["wpe"].view(_CountingWPE)
    wpe.record = rec
    model.params["wpe"] = wpe
    prompt, n = [5, 9, 2, 7], 10
    rec_total = _greedy_case(f, model, prompt, n, rec)
    del wpe.record
    want_total = len(prompt) + n  # the prompt once, then one token per step (the last one may be fed too)
    if rec_total > want_total:
        raise Fail(f"greedy_generate ran {rec_total} positions through the model for a {len(prompt)}-token prompt "
                   f"and {n} new tokens; with a KV cache it needs at most {want_total} (the prompt once, then one "
                   "token per step). Feed only the newest token to forward_cached")


@gr.part("edge cases: n_new = 0, filling the context exactly")
def _(f):
    model = tiny_model(59, n_ctx=12)
    _greedy_case(f, model, [1, 2, 3], 0)
    _greedy_case(f, model, [4, 8], 10)
