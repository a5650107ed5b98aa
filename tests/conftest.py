"""Shared fixtures: a tiny in-memory dataset and throwaway method classes for runner tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.datasets import DATASETS
from benchmark.datasets.base import Dataset, DatasetCard
from benchmark.types import EYE_CLOSED, EYE_OPEN, FaceSample, Prediction, Scan
from methods import METHODS
from methods.base import Method, MethodCard

torch.set_num_threads(1)


def _tiny_samples(n: int = 6, seed: int = 0) -> list[FaceSample]:
    """ICT faces with random identity and blinks, each with a noisy resampled 'scan'."""
    from methods.facemodel import load_ict

    full = load_ict("full")
    rng = np.random.default_rng(seed)
    blink_r, blink_l = full.exp_index("eyeBlink_R"), full.exp_index("eyeBlink_L")
    out = []
    patterns = [(0, 0), (1, 1), (1, 0), (0, 1)]
    for i in range(n):
        state = patterns[i % len(patterns)]
        ex = np.zeros(full.n_exp)
        ex[blink_r] = 1.1 if state[0] else 0.0
        ex[blink_l] = 1.1 if state[1] else 0.0
        verts = full.vertices(rng.normal(size=20) * 0.8, ex)
        lmk = verts[full.landmark_ids]
        pts = verts[rng.choice(len(verts), 3000, replace=False)]
        pts = pts + rng.normal(scale=2e-4, size=pts.shape).astype(np.float32)
        lmk7 = lmk[[36, 39, 42, 45, 33, 48, 54]]
        out.append(FaceSample(
            id=f"tiny_{i:03d}",
            subject=f"s{i // 2}",
            image=np.full((64, 64, 3), 128, np.uint8),
            eye_state=np.array([EYE_CLOSED if s else EYE_OPEN for s in state], np.int8),
            eye_openness=np.full(2, np.nan, np.float32),
            scan=Scan(points=pts.astype(np.float32), landmarks7=lmk7.astype(np.float32)),
            gt_vertices=verts,
            gt_topology="ict-full",
        ))
    return out


class TinyDataset(Dataset):
    """Six ICT faces (open, closed, winks) with scans, built in memory."""

    card = DatasetCard(name="tiny", description="test faces", card_file="synthetic.md",
                       license="MIT", has_scans=True, has_eye_labels=True, has_gt_mesh=True,
                       redistributable=True)
    option_keys = ("n",)
    _cache: dict[int, list[FaceSample]] = {}

    def _samples(self) -> list[FaceSample]:
        n = int(self.options.get("n", 6))
        if n not in self._cache:
            self._cache[n] = _tiny_samples(n)
        return self._cache[n]

    def sample_ids(self) -> list[str]:
        return [s.id for s in self._samples()]

    def load_sample(self, sample_id: str) -> FaceSample:
        return next(s for s in self._samples() if s.id == sample_id)

    def revision(self) -> str:
        return f"tiny{self.options.get('n', 6)}"


class CountingMethod(Method):
    """Returns the GT mesh; counts predictions; can fail or be interrupted on chosen ids."""

    card = MethodCard(name="counting", description="test method", topology="ict-full",
                      license="MIT", reference="tests")
    calls: list[str] = []
    fail_on: set[str] = set()
    interrupt_on: set[str] = set()

    def load(self, device: str) -> None:
        pass

    def predict(self, sample: FaceSample) -> Prediction:
        from methods.topology import get_topology

        if sample.id in self.interrupt_on:
            raise KeyboardInterrupt
        type(self).calls.append(sample.id)
        if sample.id in self.fail_on:
            raise RuntimeError(f"boom on {sample.id}")
        return Prediction(status="ok", vertices=sample.gt_vertices,
                          topology=get_topology("ict-full"))


class NeedsFileMethod(Method):
    """A method whose weights are never present."""

    card = MethodCard(
        name="needs-file", description="test method needing a file", topology="ict-narrow",
        license="MIT", reference="tests",
        required_files=(__import__("methods.base", fromlist=["RequiredFile"]).RequiredFile(
            "checkpoint", "EYEBENCH_TEST_NEEDS_FILE", "a checkpoint that does not exist"),),
    )

    def load(self, device: str) -> None:
        raise AssertionError("must never load")

    def predict(self, sample: FaceSample) -> Prediction:
        raise AssertionError("must never predict")


@pytest.fixture()
def tiny_registry(monkeypatch):
    """Registers the tiny dataset and the test methods for the duration of a test."""
    monkeypatch.delenv("EYEBENCH_TEST_NEEDS_FILE", raising=False)
    CountingMethod.calls = []
    CountingMethod.fail_on = set()
    CountingMethod.interrupt_on = set()
    DATASETS.register("tiny", TinyDataset)
    METHODS.register("counting", CountingMethod)
    METHODS.register("needs-file", NeedsFileMethod)
    yield
    DATASETS.unregister("tiny")
    METHODS.unregister("counting")
    METHODS.unregister("needs-file")


@pytest.fixture()
def run_config(tmp_path):
    """A RunConfig writing into a temporary output and cache folder."""
    from benchmark.config import RunConfig

    return RunConfig(methods="counting,mean-shape,needs-file", datasets="tiny",
                     output_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"),
                     bootstrap=50, batch_size=2, workers=0)
