"""Chapter 3, Tokens: train a small byte-level BPE of the kind GPT-2 and GPT-3 use.

Byte-pair encoding (Sennrich et al. 2016; byte-level as in Radford et al. 2019)
starts from the 256 byte values and repeatedly merges the most frequent
adjacent pair into a new token. As in GPT-2, text is first cut into chunks by a
regular expression (words with their leading space, numbers, punctuation runs,
whitespace) and merges never cross a chunk boundary. Special tokens (``<|endoftext|>``
between documents, and any others) are harder boundaries still: the text is split on
them first (``engine.encoding.split_special``), so they never take part in a merge.

Ties: when several pairs are equally frequent, the smaller pair wins, comparing the
first token's bytes, then the second's (as Hugging Face's trainer does; some others take
the greater). So training is deterministic and its result does not depend on the order
of the text's chunks.

Training is fast because every distinct chunk is counted once, and after each
merge only the pair counts of the chunks that contained the merged pair are
updated (a heap with lazy deletion finds the next most frequent pair).

The result is a real ``tiktoken.Encoding`` (rank = merge order), saved by
``engine.tokenizer.save_encoding`` in tiktoken's file format with a header naming its
split pattern and special tokens.
"""
from __future__ import annotations

import collections
import heapq

import regex
import tiktoken

from .encoding import split_special
# the files belong to the tokenizer; re-exported here, where chapter 3 and the tests look
from .tokenizer import ENDOFTEXT, R50K_PAT_STR, load_encoding, make_encoding, merges, save_encoding  # noqa: F401


def _chunk_counts(text: str, pat_str: str, special_tokens=()) -> collections.Counter:
    pat = regex.compile(pat_str)
    counts: collections.Counter = collections.Counter()
    for piece, special in split_special(text, special_tokens):
        if not special:  # a special token is a boundary, never part of a chunk
            counts.update(m.encode("utf-8") for m in pat.findall(piece))
    return counts


def bpe_merges(text: str, n_merges: int, pat_str: str = R50K_PAT_STR, progress: bool = False,
               special_tokens=()):
    """Learn ``n_merges`` merges from ``text``, split first on ``special_tokens`` (never merged).

    Returns the merge sequence as a list of ``(a, b)`` byte strings, in the order
    they were learned: merge k creates token ``a + b`` with rank 256 + k. Ties in
    frequency are broken toward the smaller pair (first ``a``, then ``b``, as byte
    strings), so training is deterministic.
    """
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    counts = _chunk_counts(text, pat_str, special_tokens)
    if not counts:
        raise ValueError("train_bpe: the text is empty")
    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    ids = {t: i for i, t in enumerate(vocab)}
    words = [list(w) for w in counts]  # each chunk as a list of token ids (bytes to start)
    freq = list(counts.values())
    pair_count: collections.Counter = collections.Counter()
    where: dict = collections.defaultdict(set)  # pair -> indices of chunks containing it
    for wi, w in enumerate(words):
        f = freq[wi]
        for a, b in zip(w, w[1:]):
            pair_count[a, b] += f
            where[a, b].add(wi)

    def key(pair):  # heap order: most frequent first, then the smaller byte strings
        return (-pair_count[pair], vocab[pair[0]], vocab[pair[1]], pair)

    heap = [key(p) for p in pair_count]
    heapq.heapify(heap)
    merges = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_merges, desc="BPE merges", unit="merge")
    while len(merges) < n_merges and heap:
        negc, _, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale heap entry
        a, b = pair
        joined = vocab[a] + vocab[b]
        if joined in ids:  # the same bytes were already built by another merge: reuse that token
            new = ids[joined]
        else:
            new = ids[joined] = len(vocab)
            vocab.append(joined)
            merges.append((vocab[a], vocab[b]))
        changed = set()
        for wi in list(where.pop(pair, ())):
            w, f = words[wi], freq[wi]
            # remove this chunk's old pairs, merge, add its new pairs
            for p in zip(w, w[1:]):
                pair_count[p] -= f
                changed.add(p)
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            for p in zip(w, w[1:]):
                s = where.get(p)
                if s is not None:
                    s.discard(wi)
            for p in zip(out, out[1:]):
                pair_count[p] += f
                where[p].add(wi)
                changed.add(p)
            words[wi] = out
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, key(p))
            else:
                pair_count.pop(p, None)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges


def _special_ids(special_tokens) -> dict | list:
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens is a list of tokens or a dict {{token: id}}, not the string {special_tokens!r}")
    out = dict(special_tokens) if isinstance(special_tokens, dict) else list(special_tokens)
    for s in out:
        if not isinstance(s, str) or not s:
            raise ValueError(f"a special token must be a non-empty string, got {s!r}")
    if isinstance(out, dict):
        return {k: int(v) for k, v in out.items()}
    if len(set(out)) != len(out):
        raise ValueError(f"special_tokens {out} name a token twice")
    return out


def encoding_from_merges(merges, name: str = "course_bpe", pat_str: str = R50K_PAT_STR,
                         special_tokens=(ENDOFTEXT,)):
    """An ``Encoding`` of the 256 bytes, the merges in order, and the special tokens.

    ``special_tokens``: a list (their ids follow the last merge, in that order), a dict
    {token: id} (those ids are theirs; the bytes and then the merges take the other ids in
    increasing order), or empty for none.
    """
    specials = _special_ids(special_tokens)
    tokens = [bytes([i]) for i in range(256)]
    known = set(tokens)
    for a, b in merges:
        if a not in known or b not in known:
            raise ValueError(f"merge {(a, b)!r} uses a token that no earlier rank defines")
        tokens.append(a + b)
        known.add(a + b)
    n = len(tokens) + len(specials)
    if isinstance(specials, list):
        specials = {s: len(tokens) + k for k, s in enumerate(specials)}
    bad = [i for i in specials.values() if not 0 <= i < n]
    if bad:
        raise ValueError(f"special token id {bad[0]} is outside 0 .. {n - 1} (the vocabulary has {n} ids)")
    taken = set(specials.values())
    free = (i for i in range(n) if i not in taken)  # bytes, then merges, in the ids left over
    return make_encoding({t: next(free) for t in tokens}, specials, pat_str, name, "encoding_from_merges")


def train_bpe(text: str, vocab_size: int, name: str = "course_bpe", pat_str: str = R50K_PAT_STR,
              progress: bool = False, special_tokens=(ENDOFTEXT,)):
    """Train a byte-level BPE with ``vocab_size`` ids: 256 bytes, the merges, the special tokens.

    ``special_tokens`` split the text before anything else, so no merge ever crosses or includes
    one (the longest wins where they overlap). A list appends them after the merges (the default:
    ``<|endoftext|>`` as the last id, as in GPT-2); a dict {token: id} gives them those ids (the
    bytes and merges fill the others in order); an empty list trains a tokenizer without any.
    Equally frequent pairs are merged smaller pair first (see the module's docstring).
    Returns an ``engine.encoding.Encoding`` (a ``tiktoken.Encoding``); ``merges(enc)`` recovers the merges.
    """
    specials = _special_ids(special_tokens)
    least = 256 + len(specials)
    if vocab_size < least:
        raise ValueError(f"vocab_size must be at least {least} (256 bytes + {len(specials)} special tokens), "
                         f"got {vocab_size}")
    want = vocab_size - least
    found = bpe_merges(text, want, pat_str, progress=progress, special_tokens=list(specials))
    if len(found) < want:
        raise ValueError(f"the text only supports {len(found)} merges; ask for vocab_size <= {least + len(found)} "
                         "or give more text")
    return encoding_from_merges(found, name, pat_str, specials)
