"""Chapter 2, Training (continued): how sure the model should be (temperature scaling).

A model that has seen a small corpus many times learns to predict its training text with great
confidence, and keeps that confidence on text it has never seen, where it is wrong more often. Its
ranking of the next tokens can still be good while its probabilities are too sharp. Temperature
scaling (Guo, Pleiss, Sun and Weinberger 2017, "On Calibration of Modern Neural Networks") fixes the
confidence with one number: every logit is divided by T (T > 1 softens, T < 1 sharpens), T fitted to
minimise the loss on held-out text. The order of the tokens, and so greedy decoding and top-k, is unchanged.

Fitting. With beta = 1 / T, z a position's logits and y its next token, the mean loss is

    f(beta) = mean over positions of  logsumexp(beta * z) - beta * z[y]
    f'(beta)  = mean of  E_p[z] - z[y]          p = softmax(beta * z)
    f''(beta) = mean of  Var_p[z]  >= 0

so f is convex in beta and Newton's method (beta -= f' / f'') finds its minimum in a few steps.

Folding. The logits are ln_f(x) @ wte.T and ln_f(x) = g * xhat + b, so dividing g and b by T divides
every logit by T: the calibrated model is an ordinary GPT with the same shape (``fold_temperature``).
"""
from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .evaluate import windows_for
from .losses import log_softmax, picked


def temperature_objective(logits, targets, beta: float, chunk: int = 2048) -> tuple[float, float, float]:
    """Mean loss of softmax(beta * logits) and its first two derivatives with respect to beta.

    logits: (N, V); targets: (N,) int, -1 for positions not scored. Returns (f, f', f'') as floats,
    computed in float64, ``chunk`` rows at a time (no (N, V) float64 temporary).
    """
    logits, targets = np.asarray(logits), np.asarray(targets)
    keep = targets >= 0
    n = int(keep.sum())
    if n == 0:
        raise ValueError("no scored positions to fit a temperature on (every target is -1)")
    f = d1 = d2 = 0.0
    for i in range(0, len(logits), chunk):
        k = keep[i:i + chunk]
        z = logits[i:i + chunk][k].astype(np.float64)
        y = targets[i:i + chunk][k]
        logp = log_softmax(beta * z)  # the loss's own log-softmax
        p = np.exp(logp)
        zy = picked(z, y)
        mean_z = (p * z).sum(axis=-1)
        f -= float(picked(logp, y).sum())
        d1 += float((mean_z - zy).sum())
        d2 += float((p * z * z).sum(axis=-1).sum() - (mean_z * mean_z).sum())
    return f / n, d1 / n, d2 / n


def fit_temperature(logits, targets, tol: float = 1e-10, max_iter: int = 50) -> float:
    """The temperature T that minimises the mean cross-entropy of softmax(logits / T).

    logits: (..., V); targets: (...) int, -1 where not scored. Newton's method on beta = 1/T, halving
    any step that would not lower the loss (f is convex, so this only guards the first steps).
    Logits that say nothing about the targets have no best T (the loss falls all the way to the uniform
    distribution, T -> infinity): refused with a ValueError.
    """
    logits = np.asarray(logits)
    V = logits.shape[-1]
    z, y = logits.reshape(-1, V), np.asarray(targets).reshape(-1)
    if len(z) != len(y):
        raise ValueError(f"logits {logits.shape} and targets {np.shape(targets)} do not match")
    beta = 1.0
    f, d1, d2 = temperature_objective(z, y, beta)
    for _ in range(max_iter):
        if d2 <= 0:  # every distribution one-hot: the loss no longer depends on beta
            break
        step = d1 / d2
        while True:
            nb = beta - step
            if nb > 0:
                nf, nd1, nd2 = temperature_objective(z, y, nb)
                if nf <= f + 1e-15:
                    break
            step /= 2
            if abs(step) < 1e-12 * beta:
                return 1.0 / beta
        beta, f, d1, d2 = nb, nf, nd1, nd2
        if beta < 1e-6:
            raise ValueError("the loss keeps falling as the temperature grows: these logits carry no "
                             "information about the targets, so no temperature fits them")
        if abs(step) < tol * beta:
            break
    return 1.0 / beta


def held_out_logits(model, ids, enc=None, max_windows: int | None = 48, batch_size: int = 8):
    """The model's logits on the first ``max_windows`` evaluation windows of ``ids`` (as ``evaluate.evaluate``).

    Returns (logits (n, T, V) float32 NumPy, targets (n, T) int, -1 where not scored).
    """
    x, y = windows_for(model, ids, enc, max_windows, None)
    out = np.empty(y.shape + (model.cfg.vocab_size,), dtype=np.float32)
    for i in range(0, len(x), batch_size):
        out[i:i + batch_size] = to_numpy(model.forward(x[i:i + batch_size]))
    return out, y


def window_losses_by_temperature(model, ids, temperatures, enc=None, batch_size: int = 8):
    """Summed loss of every evaluation window of ``ids`` at each temperature: the curve the fit minimises.

    temperatures: (nT,). Returns (nll (nT, n_windows) nats, targets (n_windows, T) int, -1 where not
    scored) from one forward pass per batch (windows and scoring as ``evaluate.evaluate``).
    """
    Ts = np.asarray(temperatures, dtype=np.float64)
    x, y = windows_for(model, ids, enc, None, None)
    nll = np.zeros((len(Ts), len(x)))
    for i in range(0, len(x), batch_size):
        yb = y[i:i + batch_size]
        keep = yb >= 0
        safe = np.where(keep, yb, 0)
        z = to_numpy(model.forward(x[i:i + batch_size])).astype(np.float64)
        for j, T in enumerate(Ts):
            nll[j, i:i + batch_size] = -(picked(log_softmax(z / T), safe) * keep).sum(axis=-1)
    return nll, y


def fold_temperature(params: dict, T: float) -> dict:
    """Parameters whose logits are those of ``params`` divided by T: ln_f's gain and bias over T.

    params: the model's parameter tree (not modified). Returns a new tree sharing every other array.
    """
    if not T > 0:
        raise ValueError(f"the temperature must be positive, got {T}")
    out = dict(params)
    out["ln_f"] = {k: v / v.dtype.type(T) for k, v in params["ln_f"].items()}
    return out
