"""Benchmarks of the engine against PyTorch / transformers references: ``python -m bench`` (see README)."""
