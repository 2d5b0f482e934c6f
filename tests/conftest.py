import os

# Tests must not depend on a GPU being present or absent.
os.environ.setdefault("ENGINE_BACKEND", "numpy")
