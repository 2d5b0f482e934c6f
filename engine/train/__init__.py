"""Chapter 2, Training: the loop that turns text into a model.

=============  =====================================================
``settings``   ``TrainConfig``: the settings of a run, and their checks
``loop``       ``Trainer``: steps, validation, checkpoints, resume
``teachers``   teacher models and their predictions, for distillation
``run``        ``python -m engine train``: data, tokenizer, model, run
=============  =====================================================

Evaluation (held-out loss, bits per byte) is ``engine.evaluate``; its names are
re-exported here, where chapter 2 and the tests have always found them.
"""
from __future__ import annotations

from ..evaluate import (LN2, bits_per_byte, eval_windows, evaluate, loss_by_position,  # noqa: F401
                        target_bytes, token_losses, windows_for)
from .loop import TrainConfig, Trainer, TrainingDiverged, locate_nonfinite  # noqa: F401
from .run import (DEFAULT_STEPS, add_train_arguments, config_from_args, main, prepare_data,  # noqa: F401
                  run_train)
from .teachers import load_teachers, prepare_teacher_targets, teacher_path  # noqa: F401
