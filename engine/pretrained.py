"""The course's pretrained model, shipped inside the package: no download needed.

``load_pretrained("shakespeare")`` returns a small GPT trained by this engine on
Shakespeare's plays (see ``engine/assets/shakespeare/MODEL_CARD.md``) and its
byte-level BPE tokenizer, as a ``tiktoken.Encoding``.

This module gathers the shipped model's names in one place:

* loading: ``load_pretrained``, ``asset_dir``, ``model_card_metrics`` (``engine.loading``);
* making the assets from a run: ``export``, ``calibrate_shipped`` (``engine.export``);
* the card's text: ``write_model_card`` (``engine.model_card``).
"""
from __future__ import annotations

from .config import GPTConfig  # noqa: F401  (the tests build configs from exported state through here)
from .evaluate import bits_per_byte as nats_to_bpb  # noqa: F401  (the older name)
from .export import CHECK_WINDOWS, calibrate_shipped, export, ngram_baselines, plot_curves  # noqa: F401
from .loading import NAMES, asset_dir, load_pretrained, model_card_metrics  # noqa: F401
from .model_card import write_model_card  # noqa: F401
