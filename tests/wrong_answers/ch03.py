"""Wrong answers for chapter 3, Tokens."""
import collections
import numpy as np

import engine


def mfp_last_tie(ids):  # ties go to the last pair seen
    c = collections.Counter(zip(ids, ids[1:]))
    best = max(c.values())
    return [p for p in c if c[p] == best][-1]


def merge_overlapping(ids, pair, new_id):  # merges inside an overlap twice
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif i > 0 and (ids[i - 1], ids[i]) == tuple(pair):
            continue
        else:
            out.append(ids[i])
    return out


def merge_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def count_chars(text):
    return len(text)


def count_words(text):
    return len(text.split())


enc = engine.get_encoding("gpt2")
CASES = [
    ("most_frequent_pair", {"most_frequent_pair": mfp_last_tie}, "Ties go to the pair that appears first"),
    ("merge", {"merge": merge_overlapping}, "expected [99, 7]"),
    ("merge", {"merge": merge_in_place}, "changed its input `ids` in place"),
    ("count_tokens", {"count_tokens": count_chars}, "number of characters"),
    ("count_tokens", {"count_tokens": count_words}, "number of words"),
    ("robot", {"robot_ids": enc.encode("robot"), "space_robot_ids": enc.encode(" robot"), "robot_answer": "D"},
     "' robot' is a single id"),
    ("robot", {"robot_ids": enc.encode(" robot"), "space_robot_ids": enc.encode("robot"), "robot_answer": "B"},
     "`robot_ids`: the ids of 'robot' are not"),
]


# ---- patterns the checks used to miss: ties, and whitespace
def mfp_smallest(ids):  # ties go to the smallest pair instead of the first seen
    import collections
    c = collections.Counter(zip(ids, ids[1:]))
    if not c:
        return None
    best = max(c.values())
    return min(p for p in c if c[p] == best)


def count_stripped(text):  # drops leading and trailing whitespace
    from engine import get_encoding
    return len(get_encoding("gpt2").encode(text.strip()))


def count_squeezed(text):  # collapses runs of whitespace
    from engine import get_encoding
    return len(get_encoding("gpt2").encode(" ".join(text.split())))


CASES += [
    ("most_frequent_pair", {"most_frequent_pair": mfp_smallest}, "smallest of the tied pairs"),
    ("count_tokens", {"count_tokens": count_stripped}, "dropping or squeezing whitespace"),
    ("count_tokens", {"count_tokens": count_squeezed}, "dropping or squeezing whitespace"),
]


# ---- correct answers written differently: full marks
def mfp_loop(ids):  # a dict and a loop; returns a list
    counts, best = {}, None
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    for pair, n in counts.items():
        if best is None or n > counts[best]:
            best = pair
    return None if best is None else list(best)


def merge_array(ids, pair, new_id):  # returns a NumPy array
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return np.asarray(out, dtype=np.int64)


RIGHT = [
    ("most_frequent_pair", {"most_frequent_pair": mfp_loop}),
    ("merge", {"merge": merge_array}),
]


# ---- diagnoses: each recomputes the merge under one mistake and names it
def merge_drops_last(ids, pair, new_id):  # the scan stops one short and never appends the last id
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_only(ids, pair, new_id):
    ids = list(ids)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return ids


def merge_right_to_left(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i > 0 and (ids[i - 1], ids[i]) == tuple(pair):
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


CASES += [
    ("merge", {"merge": merge_overlapping}, "a merged pair's ids are used up"),
    ("merge", {"merge": merge_drops_last}, "the last id went missing"),
    ("merge", {"merge": merge_first_only}, "you merged only the first occurrence"),
    ("merge", {"merge": merge_right_to_left}, "scan left to right: in [7, 7, 7] the first two ids merge"),
]
