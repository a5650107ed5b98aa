"""eyebench: an eye-aware benchmark for single-image 3D face reconstruction.

Room: the runner and everything around it (CLI, registries, datasets, prediction cache,
results store, leaderboard, plots). ``methods`` and ``metrics`` are the other two packages.

Python use::

    from benchmark.runner import run
    from benchmark.config import RunConfig
    records = run(RunConfig(methods="mean-shape", datasets="synthetic", limit=20))
"""

__version__ = "0.1.0"
