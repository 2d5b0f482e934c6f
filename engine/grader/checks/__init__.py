"""Checks for every chapter's exercises; importing this package registers all tasks in chapter order."""
from . import (ch02_training, ch03_tokens, ch04_parameters, ch05_layers, ch06_sparse_attention,  # noqa: F401
               ch07_generation, ch08_finetuning)

MODULES = ("ch02_training", "ch03_tokens", "ch04_parameters", "ch05_layers", "ch06_sparse_attention",
           "ch07_generation", "ch08_finetuning")
