# %% [raw]
# # ASSIGNMENT CONFIG
# init_cell: true
# check_all_cell: false
# export_cell: false
# generate: false
# run_tests: false
# tests:
#   ok_format: false
#   files: false

# %% [markdown]
# # Exercises, chapter 3: Tokens
#
# GPT-3 reads byte-level BPE tokens. You will implement one step of BPE training, count tokens
# with GPT-3's own tokenizer, and explain a surprise of that tokenizer.
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it for your score and specific feedback. To grade the whole
# notebook from a shell (it runs a copy; this file is not changed):
#
# ```
# python -m engine.grader exercises/03_tokens.ipynb
# ```

# %%
import collections

import engine

enc = engine.get_encoding("gpt2")  # GPT-2's and GPT-3's tokenizer: 50,257 ids

# %% [raw]
# # BEGIN QUESTION
# name: most_frequent_pair

# %% [markdown]
# ## 1. The pair to merge next
#
# BPE training repeatedly finds the most frequent pair of neighbouring ids and merges it into a
# new id. `most_frequent_pair(ids)` returns that pair as a tuple `(a, b)`; when several pairs are
# equally frequent, return the one whose first occurrence comes first in `ids` (not the smallest
# pair: in `[5, 6, 1, 2, 5, 6, 1, 2]` it is `(5, 6)`); with fewer than two ids, return
# `None`. Overlapping pairs count: `[7, 7, 7]` holds `(7, 7)` twice.

# %% [raw]
# # BEGIN SOLUTION

# %%
def most_frequent_pair(ids):
    # BEGIN SOLUTION
    counts = collections.Counter(zip(ids, ids[1:]))
    if not counts:
        return None
    return max(counts, key=counts.get)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: merge

# %% [markdown]
# ## 2. One merge step
#
# `merge(ids, pair, new_id)` returns a new list in which every occurrence of `pair` is replaced by
# `new_id`, scanning left to right: `merge([7, 7, 7], (7, 7), 99) == [99, 7]`. Do not change `ids`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def merge(ids, pair, new_id):
    # BEGIN SOLUTION
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# Three merges on a short text (runs once your two functions work):

# %%
ids = list("the cat sat on the mat".encode("utf-8"))
for new_id in (256, 257, 258):
    pair = most_frequent_pair(ids)
    if pair is None:
        break
    ids = merge(ids, pair, new_id)
    print(pair, "->", new_id, ":", ids)

# %% [raw]
# # BEGIN QUESTION
# name: count_tokens

# %% [markdown]
# ## 3. Counting GPT-3 tokens
#
# GPT-3's context and its price are measured in tokens, not characters or words.
# `count_tokens(text)` returns how many tokens `enc` (GPT-3's tokenizer, above) makes of `text`,
# taken exactly as given: spaces and newlines, leading and trailing ones too, cost tokens.

# %% [raw]
# # BEGIN SOLUTION

# %%
def count_tokens(text):
    # BEGIN SOLUTION
    return len(enc.encode(text))
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: robot

# %% [markdown]
# ## 4. Why do " robot" and "robot" get different ids?
#
# Set `robot_ids` to the ids of `"robot"` and `space_robot_ids` to those of `" robot"` (ask
# `enc`), look at them (`engine.tokenizer.show_tokens` shows the pieces), then set `robot_answer`
# to the letter of the right explanation:
#
# * **A.** The tokenizer assigns ids at random each time it runs.
# * **B.** Text is cut into words that keep the space in front of them, so " robot" (a word in the
#   middle of a sentence) is a different string from "robot"; BPE saw " robot" often enough to make
#   it one token, while "robot" is built from smaller pieces.
# * **C.** Spaces are removed before tokenizing, and a word's id depends on where it stands.
# * **D.** " robot" is a space token followed by the same tokens as "robot".

# %% [raw]
# # BEGIN SOLUTION

# %%
robot_ids = enc.encode("robot")  # SOLUTION
space_robot_ids = enc.encode(" robot")  # SOLUTION
robot_answer = "B"  # SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
