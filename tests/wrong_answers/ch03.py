"""Wrong answers for chapter 3, Tokens."""
import collections

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
