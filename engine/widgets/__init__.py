"""The book's interactive widgets: one small Python class with traits plus one ES module each (anywidget).

Each widget computes its data with the engine (pure functions, tested without a kernel) and keeps it
in synced traits; its module in ``js/`` draws it and reacts to the controls, in a live notebook and
in the static book alike (``base.py``).

=========================  ==========================================  =======
widget                     pure function(s)                            chapter
=========================  ==========================================  =======
``GenerationPlayground``   ``generate_text``                           1, 7
``SlidingWindowExplorer``  ``sliding_window_examples``                 2
``TokenizerPlayground``    ``tokenize_report``                         3
``ParameterCalculator``    ``parameter_report``                        4, 9
``XRayViewer``             ``logit_lens_table``, ``xray``              5
``AttentionExplorer``      ``attention_summary``                       6
``SamplingExplorer``       ``sampling_table``                          7
``Animation``              ``frames.*`` (one function per chapter)     1-8
=========================  ==========================================  =======
"""
from .reports import (AttentionExplorer, GenerationPlayground, ParameterCalculator, SamplingExplorer,  # noqa: F401
                      TokenizerPlayground, XRayViewer, attention_summary, generate_text, logit_lens_table,
                      parameter_report, sampling_table, tokenize_report, xray)
from .sliding_window import SlidingWindowExplorer, sliding_window_examples  # noqa: F401
from . import frames  # noqa: F401,E402
from .animation import Animation  # noqa: F401,E402
