"""The embedded synthetic eye-state benchmark: generator and cache.

Room: making the default dataset. ``config.py`` holds every generation parameter and the
seeding scheme, ``scene.py`` builds and renders one face (ICT-FaceKit identity + detail,
expression with per-eye blinks, eyeballs, pose, light, background), ``store.py`` writes the
cache and generates missing samples in parallel. The loader the runner sees is
``benchmark/datasets/synthetic.py``; the card is ``data_cards/synthetic.md``.
"""

from benchmark.synthetic.config import CATEGORIES, GENERATOR_VERSION, SyntheticConfig
from benchmark.synthetic.store import SyntheticStore, cache_root

__all__ = ["CATEGORIES", "GENERATOR_VERSION", "SyntheticConfig", "SyntheticStore", "cache_root"]
