"""Chapter 8, Fine-tuning: the task, its words, and the prompts.

The task, in the spirit of the GPT-3 demos that turned a description into UI code:
``an input that says "search"`` -> ``<input type="text" placeholder="search">``.
Every example is written in one format, also used for few-shot prompts
(Brown et al. 2020 call a task demonstration in the prompt "in-context learning")::

    [example] an input that says "search" [toCode] <input type="text" placeholder="search">

The test words (``TEST_WORDS``) never appear in training, so accuracy measures whether the
model learned to *copy* the quoted word into the code, not the pairs. A model fine-tuned on a
few dozen words memorises them and writes one of them whatever the description says; many
varied words (``vocab_words``: every lowercase word of the tokenizer's vocabulary; ``piece_words``:
made-up words glued from its pieces, so that every piece gets practice in being copied; test words
always left out) leave it no way but to copy.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

TEMPLATES = [
    ('an input that says "{w}"', '<input type="text" placeholder="{w}">'),
    ('a button that says "{w}"', "<button>{w}</button>"),
    ('a heading that says "{w}"', "<h1>{w}</h1>"),
    ('a link that says "{w}"', '<a href="#">{w}</a>'),
    # no space before the label: " {w}" would be other tokens than the description's "{w}"
    # (" light" is one token, "light" after a quote is "l", "ight"), so the answer would not be a copy
    ('a checkbox labelled "{w}"', '<label><input type="checkbox">{w}</label>'),
]
# Words that could label a control.
WORDS = ["search", "name", "email", "submit", "login", "password", "cancel", "next", "back", "city",
         "home", "help", "save", "open", "close", "music", "phone", "price", "title", "date",
         "country", "message", "start", "stop", "menu", "send", "order", "king", "queen", "love",
         "time", "day", "night", "world", "heart", "word", "house", "friend", "father", "mother",
         "sword", "crown", "letter", "money", "land", "sea", "fire", "water", "light", "book",
         "play", "song", "door", "gold", "lord", "lady", "field", "horse", "town", "news",
         "hand", "head", "name", "life", "death", "power", "peace", "war", "truth", "honour"]
WORDS = list(dict.fromkeys(WORDS))  # unique, in order
TEST_WORDS = WORDS[::6]  # every sixth word is never seen in fine-tuning
TRAIN_WORDS = [w for w in WORDS if w not in TEST_WORDS]
SEP = " [toCode] "
PREFIX = "[example] "
END = "\n"


@dataclass(frozen=True)
class Example:
    description: str
    code: str

    def prompt(self) -> str:
        """The text the model continues: ``[example] <description> [toCode]``."""
        return f"{PREFIX}{self.description}{SEP.rstrip()}"

    def target(self) -> str:
        """What a correct model writes after the prompt (a space, the code, the end of the line)."""
        return f" {self.code}{END}"

    def line(self) -> str:
        return self.prompt() + self.target()


def make_dataset(words=None, templates=None) -> list[Example]:
    """Every (template, word) pair as an ``Example``. Default: the training words."""
    words = TRAIN_WORDS if words is None else words
    templates = TEMPLATES if templates is None else templates
    return [Example(d.format(w=w), c.format(w=w)) for d, c in templates for w in words]


def vocab_words(enc, min_len: int = 3, max_len: int = 10) -> list[str]:
    """Lowercase words the tokenizer has as one token with a leading space (``" crown"`` -> ``crown``),
    in token-id order, ``TEST_WORDS`` left out. For the Shakespeare tokenizer: about 1,500 words."""
    pattern = re.compile(f" [a-z]{{{min_len},{max_len}}}")
    out, seen = [], set(TEST_WORDS)
    for t in range(enc.n_vocab):
        s = enc.decode([t])
        if pattern.fullmatch(s) and s[1:] not in seen:
            seen.add(s[1:])
            out.append(s[1:])
    return out


def random_words(n: int, seed: int = 0, min_len: int = 3, max_len: int = 8) -> list[str]:
    """``n`` made-up lowercase words ("qvoret"), never a test word: nothing to remember about them, so
    the only way to get them right is to copy them, token by token, whatever pieces they split into."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(min_len, max_len)))
        if w not in TEST_WORDS and w not in out:
            out.append(w)
    return out


def piece_words(enc, n: int, seed: int = 0, max_pieces: int = 3) -> list[str]:
    """``n`` made-up words glued from 1 .. ``max_pieces`` random lowercase tokens of the vocabulary
    that have no leading space ("ance" + "ord"), never a test word. A word in quotes is split into such
    pieces, and some of them are rare in the pretraining text: each of them gets practice being copied."""
    pieces = sorted({s for s in (enc.decode([t]) for t in range(enc.n_vocab)) if re.fullmatch("[a-z]+", s)})
    rng = random.Random(seed)
    out: set[str] = set()
    words: list[str] = []
    while len(words) < n:
        w = "".join(rng.choice(pieces) for _ in range(rng.randint(1, max_pieces)))
        if w not in TEST_WORDS and w not in out and len(w) <= 12:
            out.add(w)
            words.append(w)
    return words


def train_test_split(seed: int = 0, unseen_words: bool = True, more_words=None):
    """(train examples, test examples), no pair in both.

    Default: the test words never appear in training (``TEST_WORDS``). ``more_words``: extra
    training words (e.g. ``vocab_words(enc)``; test words among them are dropped). With
    ``unseen_words=False`` every word is held out with one template (word i with template
    i mod 5) and seen with the others: a test pair is a new combination of known parts.
    """
    if unseen_words:
        extra = [w for w in (more_words or []) if w not in TEST_WORDS and w not in TRAIN_WORDS]
        train, test = make_dataset(TRAIN_WORDS + list(dict.fromkeys(extra))), make_dataset(TEST_WORDS)
    else:
        if more_words:
            raise ValueError("more_words needs unseen_words=True (the extra words have no held-out template)")
        train, test = [], []
        for i, w in enumerate(WORDS):
            for j, (d, c) in enumerate(TEMPLATES):
                (test if j == i % len(TEMPLATES) else train).append(Example(d.format(w=w), c.format(w=w)))
    random.Random(seed).shuffle(train)
    return train, test


def few_shot_prompt(query: Example, shots: list[Example]) -> str:
    """k demonstrations, one per line, then the query's prompt."""
    return "".join(s.line() for s in shots) + query.prompt()


def template_of(ex: Example) -> int:
    """Index in ``TEMPLATES`` of the template ``ex`` was made from (-1 if none)."""
    for i, (d, c) in enumerate(TEMPLATES):
        if re.fullmatch(re.escape(d).replace(re.escape("{w}"), '[^"]+'), ex.description):
            return i
    return -1


def right_form(ex: Example, got: str) -> bool:
    """Is ``got`` the code of the right template, whatever word it holds? (Partial credit: the
    model may learn the shape of the answer before it learns to copy the word.)"""
    i = template_of(ex)
    if i < 0:
        return False
    pattern = re.escape(TEMPLATES[i][1]).replace(re.escape("{w}"), '[^<>"]+')
    return re.fullmatch(pattern, got.strip()) is not None
