"""The book's interactive widgets: one small Python class with traits plus one ES module each (anywidget).

Each widget computes its data with the engine (pure functions, tested without a kernel) and keeps it
in synced traits; its module in ``js/`` draws it and reacts to the controls, in a live notebook and in
the static book alike (``base.py``; what the page needs besides the saved state: ``site.py``).

=========================  ==========================================  =======  =====================
widget                     pure function(s)                            chapter  in the static book
=========================  ==========================================  =======  =====================
``GenerationPlayground``   ``generate_text``                           1, 7, 8  the model, in the page
``SlidingWindowExplorer``  ``sliding_window_examples``                 2        the page
``TokenizerPlayground``    ``tokenize_report``                         3        tiktoken (WASM)
``ParameterCalculator``    ``parameter_report``                        4, 9     the page
``XRayViewer``             ``logit_lens_table``, ``xray``              5        the model, in the page
``AttentionExplorer``      ``attention_summary``                       6        the page
``SamplingExplorer``       ``sampling_table``                          7        the page
``Animation``              ``frames.*`` (one function per chapter)     1-8      the page (a player)
=========================  ==========================================  =======  =====================
"""
from .attention_explorer import AttentionExplorer, attention_summary  # noqa: F401
from .generation import GenerationPlayground, generate_text  # noqa: F401
from .parameters import ParameterCalculator, parameter_report  # noqa: F401
from .sampling import SamplingExplorer, sampling_table  # noqa: F401
from .sliding_window import SlidingWindowExplorer, sliding_window_examples  # noqa: F401
from .tokenizer import TokenizerPlayground, tokenize_report  # noqa: F401
from .xray import XRayViewer, logit_lens_table, xray  # noqa: F401
from . import frames  # noqa: F401
from .animation import Animation  # noqa: F401
