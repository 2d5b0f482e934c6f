"""Chapter 3, Tokens: train a small byte-level BPE of the kind GPT-2 and GPT-3 use.

Byte-pair encoding (Sennrich et al. 2016; byte-level as in Radford et al. 2019)
starts from the 256 byte values and repeatedly merges the most frequent
adjacent pair into a new token. As in GPT-2, text is first cut into chunks by a
regular expression (words with their leading space, numbers, punctuation runs,
whitespace) and merges never cross a chunk boundary.

Training is fast because every distinct chunk is counted once, and after each
merge only the pair counts of the chunks that contained the merged pair are
updated (a heap with lazy deletion finds the next most frequent pair).

The result is a real ``tiktoken.Encoding`` (rank = merge order) saved in
tiktoken's own file format: one ``base64(token bytes) rank`` line per token.
"""
from __future__ import annotations

import collections
import heapq

import regex
import tiktoken

# the .tiktoken files belong to the tokenizer; re-exported here, where chapter 3 and the tests look
from .tokenizer import ENDOFTEXT, R50K_PAT_STR, load_encoding, save_encoding  # noqa: F401


def _chunk_counts(text: str, pat_str: str) -> collections.Counter:
    return collections.Counter(m.encode("utf-8") for m in regex.findall(pat_str, text))


def bpe_merges(text: str, n_merges: int, pat_str: str = R50K_PAT_STR, progress: bool = False):
    """Learn ``n_merges`` merges from ``text``.

    Returns the merge sequence as a list of ``(a, b)`` byte strings, in the order
    they were learned: merge k creates token ``a + b`` with rank 256 + k. Ties in
    frequency are broken by the smaller pair of byte strings, so training is deterministic.
    """
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    counts = _chunk_counts(text, pat_str)
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


def encoding_from_merges(merges, name: str = "course_bpe", pat_str: str = R50K_PAT_STR) -> tiktoken.Encoding:
    """A ``tiktoken.Encoding``: ranks 0-255 are the bytes, 256 + k is merge k, then ``<|endoftext|>``."""
    ranks = {bytes([i]): i for i in range(256)}
    for a, b in merges:
        if a not in ranks or b not in ranks:
            raise ValueError(f"merge {(a, b)!r} uses a token that no earlier rank defines")
        ranks[a + b] = len(ranks)
    return tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: len(ranks)}, explicit_n_vocab=len(ranks) + 1)


def train_bpe(text: str, vocab_size: int, name: str = "course_bpe", pat_str: str = R50K_PAT_STR,
              progress: bool = False) -> tiktoken.Encoding:
    """Train a byte-level BPE with ``vocab_size`` ids (256 bytes + merges + ``<|endoftext|>``).

    Returns a ``tiktoken.Encoding``; ``merges(enc)`` recovers the merge sequence.
    """
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + <|endoftext|>), got {vocab_size}")
    merges = bpe_merges(text, vocab_size - 257, pat_str, progress=progress)
    if len(merges) < vocab_size - 257:
        raise ValueError(f"the text only supports {len(merges)} merges; ask for vocab_size <= {257 + len(merges)} "
                         "or give more text")
    return encoding_from_merges(merges, name, pat_str)


def merges(enc: tiktoken.Encoding) -> list[tuple[bytes, bytes]]:
    """The merge sequence of an encoding (in rank order): for each multi-byte token, the two
    lower-ranked tokens it was built from (found as tiktoken itself would split it)."""
    ranks = enc._mergeable_ranks
    out = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) == 1:
            continue
        # replay BPE on the token's bytes using only merges learned before it: the last two pieces
        parts = [bytes([c]) for c in tok]
        while len(parts) > 2:
            def r(i):
                x = ranks.get(parts[i] + parts[i + 1], 1 << 60)
                return x if x < rank else 1 << 60
            best = min(range(len(parts) - 1), key=r)
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        out.append((parts[0], parts[1]))
    return out
