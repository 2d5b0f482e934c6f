"""Checks for every chapter's exercises; importing this package registers all tasks in chapter order."""
import importlib

MODULES = ("ch02_training", "ch03_tokens", "ch04_parameters", "ch05_layers", "ch06_sparse_attention",
           "ch07_generation", "ch08_finetuning")
for _m in MODULES:
    importlib.import_module(f"{__name__}.{_m}")
