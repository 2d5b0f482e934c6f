"""Wrong answers for chapter 7, Generation."""
import numpy as np

from engine.generate import softmax as good_softmax


def softmax_unstable(logits, temperature=1.0):
    e = np.exp(np.asarray(logits, dtype=float) / temperature)
    return e / e.sum(-1, keepdims=True)


def softmax_times_t(logits, temperature=1.0):
    return good_softmax(np.asarray(logits) * temperature)


def softmax_global(logits, temperature=1.0):  # normalises over the whole batch
    z = np.asarray(logits, dtype=float) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def top_k_no_renorm(logits, k):
    p = good_softmax(logits)
    out = np.zeros_like(p)
    keep = np.argsort(-p)[:k]
    out[keep] = p[keep]
    return out


def top_p_strict(logits, p):  # drops the token that crosses p
    probs = good_softmax(logits)
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    out = np.zeros_like(probs)
    keep = order[cum <= p]
    out[keep] = probs[keep]
    return out / out.sum() if out.sum() else out


def greedy_no_cache(model, prompt, n_new):
    seq = list(prompt)
    for _ in range(n_new):
        seq.append(int(np.argmax(model.forward(np.asarray(seq))[-1])))
    return seq


def greedy_only_new(model, prompt, n_new):
    seq = list(prompt)
    for _ in range(n_new):
        seq.append(int(np.argmax(model.forward(np.asarray(seq))[-1])))
    return seq[len(prompt):]


def greedy_first_position(model, prompt, n_new):  # argmax of the first position's logits
    seq = list(prompt)
    for _ in range(n_new):
        seq.append(int(np.argmax(model.forward(np.asarray(seq))[0])))
    return seq


CASES = [
    ("softmax", {"softmax": softmax_unstable}, "overflows for logits near 1000"),
    ("softmax", {"softmax": softmax_times_t}, "you multiplied"),
    ("softmax", {"softmax": softmax_global}, "normalise each row on its own"),
    ("top_k", {"top_k_probs": top_k_no_renorm}, "renormalise"),
    ("top_p", {"top_p_probs": top_p_strict}, "including the token that crosses p"),
    ("greedy_generate", {"greedy_generate": greedy_no_cache}, "Feed only the newest token"),
    ("greedy_generate", {"greedy_generate": greedy_only_new}, "returned only the"),
    ("greedy_generate", {"greedy_generate": greedy_first_position}, "argmax of the last position"),
]


# ---- patterns the checks used to miss: rows far apart, ties, exact boundaries
def softmax_batch_max(logits, temperature=1.0):  # shifts by the batch's maximum, not each row's
    z = np.asarray(logits, dtype=float) / temperature
    e = np.exp(z - z.max())
    return e / e.sum(-1, keepdims=True)


def top_k_keeps_ties(logits, k):  # keeps every token at least as likely as the k-th
    p = good_softmax(logits)
    kth = np.sort(p)[::-1][min(k, len(p)) - 1]
    out = np.where(p >= kth, p, 0.0)
    return out / out.sum()


def top_p_le(logits, p):  # keeps a token while the mass before it is <= p (one too many at the boundary)
    probs = good_softmax(logits)
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    keep = order[(cum - probs[order]) <= p]
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


CASES += [
    ("softmax", {"softmax": softmax_batch_max}, "subtract each row's own maximum"),
    ("top_k", {"top_k_probs": top_k_keeps_ties}, "keep exactly k tokens even when several tie"),
    ("top_p", {"top_p_probs": top_p_le}, "add up to exactly p, stop"),
]


# ---- correct answers written differently: full marks
def softmax_loop(logits, temperature=1.0):  # a loop over rows, lists allowed
    z = np.atleast_2d(np.asarray(logits, dtype=np.float64)) / temperature
    rows = []
    for r in z:
        e = np.exp(r - r.max())
        rows.append(e / e.sum())
    out = np.array(rows)
    return out if np.ndim(logits) == 2 else out[0]


def top_k_argpartition(logits, k):  # which of the tied tokens it keeps is arbitrary
    p = good_softmax(logits)
    if k >= len(p):
        return p
    keep = np.argpartition(-p, k - 1)[:k]
    out = np.zeros_like(p)
    out[keep] = p[keep]
    return out / out.sum()


def top_p_loop(logits, p):
    probs = good_softmax(logits)
    out, mass = np.zeros_like(probs), 0.0
    for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
        if mass >= p:
            break
        out[i] = probs[i]
        mass += probs[i]
    return out / out.sum()


RIGHT = [
    ("softmax", {"softmax": softmax_loop}),
    ("top_k", {"top_k_probs": top_k_argpartition}),
    ("top_p", {"top_p_probs": top_p_loop}),
]


def greedy_array(model, prompt, n_new):  # returns a NumPy array; feeds the last token even on the last step
    from engine.generate import KVCache, forward_cached
    out = np.asarray(prompt, dtype=np.int64)
    if n_new == 0:
        return out
    cache = KVCache(model, 1)
    logits = forward_cached(model, out[None], cache)
    for _ in range(n_new):
        nxt = np.asarray(logits)[0].argmax()
        out = np.append(out, nxt)
        if len(out) < model.cfg.n_ctx:
            logits = forward_cached(model, np.asarray([[nxt]]), cache)
    return out


RIGHT += [("greedy_generate", {"greedy_generate": greedy_array})]


# ---- diagnoses: each recomputes what one mistake keeps or generates and names it
def top_k_one_more(logits, k):  # the slice keeps k + 1
    p = good_softmax(logits)
    keep = np.argsort(-p)[:k + 1]
    out = np.zeros_like(p)
    out[keep] = p[keep]
    return out / out.sum()


def greedy_one_short(model, prompt, n_new):  # range(n_new - 1)
    seq = list(prompt)
    for _ in range(max(n_new - 1, 0)):
        seq.append(int(np.argmax(model.forward(np.asarray(seq))[-1])))
    return seq


CASES += [
    ("top_k", {"top_k_probs": top_k_one_more}, "you kept k + 1 tokens"),
    ("top_p", {"top_p_probs": top_p_strict}, "you dropped the token that crosses p"),
    ("greedy_generate", {"greedy_generate": greedy_first_position}, "you took the argmax of position 0's logits"),
    ("greedy_generate", {"greedy_generate": greedy_one_short}, "one token too few"),
]
