"""Chapter 3, Tokens: one BPE merge step, counting GPT-3 tokens, why " robot" != "robot"."""
from __future__ import annotations

import collections

import numpy as np

from ...tokenizer import get_encoding
from ..tasks import task
from ..runner import Fail, call, describe, require_result

CH = "03_tokens"


def ref_most_frequent_pair(ids):
    """The most frequent adjacent pair; ties go to the pair that occurs first. None if len(ids) < 2."""
    counts = collections.Counter(zip(ids, ids[1:]))
    if not counts:
        return None
    return max(counts, key=counts.get)  # Counter keeps first-seen order; max keeps the first maximum


def ref_merge(ids, pair, new_id):
    """Replace every occurrence of ``pair`` (left to right, non-overlapping) by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _as_list(got, what):
    require_result(got, what)
    try:
        return [int(x) for x in got]
    except Exception:
        raise Fail(f"{what} returned {describe(got)}; expected a list of integer ids") from None


# ---------------------------------------------------------------------- most_frequent_pair
mfp = task("most_frequent_pair", CH, "The pair to merge next", "most_frequent_pair")


def _mfp_case(f, ids):
    what = f"most_frequent_pair({describe(ids)})"
    got = call(f, ids, name="most_frequent_pair", arg_names=["ids"])
    want = ref_most_frequent_pair(ids)
    if want is None:
        if got is not None:
            raise Fail(f"{what}: with fewer than two ids there is no pair; return None, got {describe(got)}")
        return
    require_result(got, what)
    try:
        g = tuple(int(x) for x in got)
    except Exception:
        raise Fail(f"{what} returned {describe(got)}; expected a pair of ids like (104, 101)") from None
    if g != want:
        counts = collections.Counter(zip(ids, ids[1:]))
        hint = ""
        if counts.get(g, 0) == counts[want]:
            tied = [q for q in counts if counts[q] == counts[want]]
            if g == min(tied):
                hint = (". That is the smallest of the tied pairs. Ties go to the pair that appears first in ids, "
                        "not the smallest (max over a Counter, which keeps first-seen order, does that)")
            elif g == tied[-1]:
                hint = (". That is the tied pair seen last. Ties go to the pair that appears first (keep the "
                        "first maximum: compare with >, not >=)")
            else:
                hint = ". Ties go to the pair that appears first"
        raise Fail(f"{what}: expected {want} (seen {counts[want]} times), got {g} (seen {counts.get(g, 0)} times)"
                   + hint)


@mfp.part("random id lists")
def _(f):
    rng = np.random.default_rng(10)
    _mfp_case(f, list(b"hello hello help"))
    for n in (10, 50):
        _mfp_case(f, [int(x) for x in rng.integers(0, 6, n)])


@mfp.part("ties and short lists")
def _(f):
    _mfp_case(f, [1, 2, 3, 4, 3, 4, 1, 2])  # (1, 2) and (3, 4) both twice: (1, 2) comes first
    _mfp_case(f, [5, 6, 1, 2, 5, 6, 1, 2])  # tied: (5, 6) is first, (1, 2) the smallest
    _mfp_case(f, [9, 8, 3, 9, 8, 3, 1])  # tied: (9, 8) is first, (3, 9) and (8, 3) come later
    _mfp_case(f, [7, 7, 7])  # (7, 7) counted twice (overlapping counts are fine for counting)
    _mfp_case(f, [5])
    _mfp_case(f, [])


# ---------------------------------------------------------------------- merge
merge = task("merge", CH, "One BPE merge step", "merge")


def _merge_case(f, ids, pair, new_id, hint=""):
    what = f"merge({describe(ids)}, pair={pair}, new_id={new_id})"
    got = _as_list(call(f, ids, pair, new_id, name="merge", arg_names=["ids", "pair", "new_id"]), what)
    want = ref_merge(ids, pair, new_id)
    if got != want:
        found = next((h for h, alt in _merge_mistakes(ids, pair, new_id) if alt != want and alt == got), "")
        hint = found or hint
        raise Fail(f"{what}: expected {want}, got {got}" + (f". {hint}" if hint else ""))


def _merge_mistakes(ids, pair, new_id):
    """(hint, result) for the usual wrong merges, each recomputed on these ids."""
    ids = list(ids)
    starts = [i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair) for i in range(len(ids))]
    # every position that starts a match becomes new_id, overlaps included: (7, 7) in [7, 7, 7] -> [99, 99]
    overlapping = [new_id if starts[i] else x for i, x in enumerate(ids) if starts[i] or not (i and starts[i - 1])]
    short, i = [], 0  # a scan that stops at len(ids) - 1 and so never appends the last id on its own
    while i < len(ids) - 1:
        short.append(new_id if starts[i] else ids[i])
        i += 2 if starts[i] else 1
    first = ids
    if any(starts):
        k = starts.index(True)
        first = ids[:k] + [new_id] + ids[k + 2:]
    rev = ref_merge(ids[::-1], tuple(pair)[::-1], new_id)[::-1]
    return [
        ("a merged pair's ids are used up: after a match skip both (i += 2), so in [7, 7, 7] only the first "
         "(7, 7) merges (left to right, non-overlapping)", overlapping),
        ("the last id went missing: when the scan reaches the last id and it starts no pair, append it too "
         "(loop while i < len(ids), not len(ids) - 1)", short),
        ("you merged only the first occurrence; merge every occurrence of the pair", first),
        ("scan left to right: in [7, 7, 7] the first two ids merge, giving [99, 7], not [7, 99]", rev),
    ]


@merge.part("merges every occurrence")
def _(f):
    text = list("the cat sat on the mat".encode())
    _merge_case(f, text, (97, 116), 256)  # "at"
    rng = np.random.default_rng(11)
    ids = [int(x) for x in rng.integers(0, 4, 40)]
    _merge_case(f, ids, ref_most_frequent_pair(ids), 300)


@merge.part("overlaps and ends: left to right, non-overlapping")
def _(f):
    _merge_case(f, [7, 7, 7], (7, 7), 99, hint="scan left to right; a merged id is not merged again in the same step")
    _merge_case(f, [7, 7, 7, 7], (7, 7), 99)
    _merge_case(f, [1, 2], (1, 2), 5)
    _merge_case(f, [3], (1, 2), 5)
    _merge_case(f, [2, 1, 2], (1, 2), 5)


@merge.part("leaves its input unchanged")
def _(f):
    _merge_case(f, [1, 2, 3, 1, 2], (1, 2), 9)  # call() reports an input changed in place


# ---------------------------------------------------------------------- count_tokens
count = task("count_tokens", CH, "Counting GPT-3 tokens", "count_tokens")
TEXTS = ["Hello, world!", "The robot walked into the room.", "  leading spaces and trailing  ",
         "naïve café déjà vu — 東京 🙂", "def f(x):\n    return x ** 2\n", "1234567890 3.14159",
         "antidisestablishmentarianism"]


def _count_case(f, text):
    want = len(get_encoding("gpt2").encode(text))
    got = call(f, text, name="count_tokens", arg_names=["text"])
    require_result(got, "count_tokens")
    if isinstance(got, (list, tuple)):
        raise Fail(f"count_tokens({text!r}) returned the list of ids; return how many there are (len)")
    try:
        g = int(got)
    except Exception:
        raise Fail(f"count_tokens({text!r}) returned {describe(got)}; expected an integer") from None
    if g != want:
        hint = ""
        enc = get_encoding("gpt2")
        trimmed = {len(enc.encode(text.strip())), len(enc.encode(" ".join(text.split()))),
                   len(enc.encode("".join(text.split())))} - {want}
        if g in trimmed:
            hint = (": that is the count after dropping or squeezing whitespace; spaces and newlines are part of "
                    "the text and cost tokens too, so encode the text exactly as given")
        elif g == len(text):
            hint = ": that is the number of characters; tokens are counted with engine.get_encoding('gpt2').encode"
        elif g == len(text.encode()):
            hint = ": that is the number of UTF-8 bytes; count the ids that encode returns"
        elif g == len(text.split()):
            hint = ": that is the number of words; count the ids that encode returns"
        raise Fail(f"count_tokens({text!r}): expected {want}, got {g}{hint}")


@count.part("English text")
def _(f):
    for t in TEXTS[:3]:
        _count_case(f, t)


@count.part("accents, other scripts, emoji, code, numbers, the empty string")
def _(f):
    for t in TEXTS[3:] + [""]:
        _count_case(f, t)


# ---------------------------------------------------------------------- " robot" vs "robot"
robot = task("robot", CH, 'Why " robot" and "robot" get different ids',
             ("robot_ids", "space_robot_ids", "robot_answer"))
ROBOT_ANSWER = "B"


@robot.part("the ids of 'robot' and ' robot'")
def _(robot_ids, space_robot_ids, robot_answer):
    enc = get_encoding("gpt2")
    for name, val, text in [("robot_ids", robot_ids, "robot"), ("space_robot_ids", space_robot_ids, " robot")]:
        want = enc.encode(text)
        if val is Ellipsis or val is None:
            raise Fail(f"`{name}` is still `...`: set it to the list of ids of {text!r}")
        try:
            got = [int(x) for x in val]
        except Exception:
            raise Fail(f"`{name}` should be a list of ids (what encode returns), got {describe(val)}") from None
        if got != want:
            raise Fail(f"`{name}`: the ids of {text!r} are not {got}; ask the tokenizer: "
                       f"engine.get_encoding('gpt2').encode({text!r})")


@robot.part("the explanation")
def _(robot_ids, space_robot_ids, robot_answer):
    if robot_answer is Ellipsis or robot_answer is None:
        raise Fail("`robot_answer` is still `...`: set it to the letter of the explanation you choose, e.g. 'A'")
    a = str(robot_answer).strip().upper().strip("()")
    if a not in "ABCD" or len(a) != 1:
        raise Fail(f"`robot_answer` should be one letter A, B, C or D, got {robot_answer!r}")
    if a != ROBOT_ANSWER:
        why = {"A": "the ids are the same every run: tokenizing is deterministic",
               "C": "spaces are not removed: decode(encode(text)) gives the text back exactly, spaces included",
               "D": "look at the ids: ' robot' is a single id, not a space id followed by the ids of 'robot'"}[a]
        raise Fail(f"not {a}: {why}. Look at the pieces with engine.tokenizer.show_tokens")
