"""Evaluation datasets behind one contract (:class:`benchmark.datasets.base.Dataset`).

Room: dataset loaders and their registry. Each dataset has a card in ``data_cards/``.

Adding a new dataset:

1. Write ``benchmark/datasets/<name>.py`` with a ``Dataset`` subclass whose ``card`` names a
   card file, and implement ``sample_ids``, ``load_sample`` and ``revision``.
2. Write ``data_cards/<name>.md`` (source, licence, citation, layout, protocol, units).
3. Register it below; add a tiny fixture in the official layout under ``tests/`` and a
   loader test.

See ``docs/adding_a_dataset.md``.
"""

from __future__ import annotations

from benchmark.registry import Registry

DATASETS: Registry = Registry(
    "dataset",
    {
        "synthetic": "benchmark.datasets.synthetic:SyntheticDataset",
        "now": "benchmark.datasets.now:NowDataset",
        "realy": "benchmark.datasets.realy:RealyDataset",
        "photo-folder": "benchmark.datasets.photo_folder:PhotoFolderDataset",
        "real-faces-val": "benchmark.datasets.real_faces:RealFacesDataset",
        "real-faces-val-eyes-masked": "benchmark.datasets.masked:MaskedRealFacesDataset",
    },
)

#: What ``run`` evaluates when ``--datasets`` is not given: the embedded default.
DEFAULT_DATASETS = "synthetic"

__all__ = ["DATASETS", "DEFAULT_DATASETS"]
