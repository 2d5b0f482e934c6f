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
