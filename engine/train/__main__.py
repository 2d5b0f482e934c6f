"""``python -m engine.train``: the same as ``python -m engine train``."""
from .run import main

main()
