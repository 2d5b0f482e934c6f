"""``python -m engine.grader NOTEBOOK [NOTEBOOK ...]``: grade exercise notebooks from the shell."""
import sys

from .notebook import main

sys.exit(main())
