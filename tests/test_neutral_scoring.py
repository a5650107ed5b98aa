"""Which mesh is scored: neutral meshes against neutral scans, the expressive one for eyes."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.datasets.base import SCANS_NEUTRAL, load_sample_or_error
from benchmark.datasets.now import NowDataset
from benchmark.scoring import ScoringParams, score_sample
from benchmark.types import Prediction
from methods.facemodel import load_ict
from metrics import eye_openness
from tests.test_now_and_import import make_now_root

PARAMS = ScoringParams(closed_threshold=0.1)


@pytest.fixture(scope="module")
def now_sample(tmp_path_factory):
    """The NoW stand-in's first sample, loaded as the runner loads it."""
    ds = NowDataset(root=make_now_root(tmp_path_factory.mktemp("now") / "NoW"))
    assert ds.card.scans_neutral
    return load_sample_or_error(ds, ds.sample_ids()[0])


@pytest.fixture(scope="module")
def meshes():
    """(neutral, expressive) ICT meshes: the expressive one blinks and opens the jaw."""
    ict = load_ict("narrow")
    exp = np.zeros(ict.n_exp)
    for name, value in (("eyeBlink_L", 1.0), ("eyeBlink_R", 1.0), ("jawOpen", 1.0)):
        exp[ict.exp_names.index(name)] = value
    return ict, ict.vertices(), ict.vertices(exp_coeffs=exp)


def test_neutral_scan_scores_the_neutral_mesh_and_eyes_read_the_posed_one(now_sample, meshes):
    ict, neutral, posed = meshes
    topo = ict.topology()
    assert now_sample.meta[SCANS_NEUTRAL] is True
    both = Prediction(status="ok", vertices=posed, neutral_vertices=neutral, topology=topo)
    row, dist = score_sample(now_sample, both, PARAMS)
    assert row["s2m_mesh"] == "neutral" and dist is not None
    only_neutral, _ = score_sample(
        now_sample, Prediction(status="ok", vertices=neutral, topology=topo), PARAMS)
    only_posed, _ = score_sample(
        now_sample, Prediction(status="ok", vertices=posed, topology=topo), PARAMS)
    assert only_posed["s2m_mesh"] == "posed"
    assert row["s2m_median_mm"] == pytest.approx(only_neutral["s2m_median_mm"], rel=1e-9)
    assert abs(row["s2m_median_mm"] - only_posed["s2m_median_mm"]) > 1e-3
    # eye state and openness come from the expressive mesh: the blink is seen
    openness = eye_openness(topo.landmarks(posed))
    assert row["openness_pred_0"] == pytest.approx(float(openness[0]))
    assert row["eye_pred_0"] == only_posed["eye_pred_0"]
    assert eye_openness(topo.landmarks(neutral))[0] > openness[0]


def test_scans_with_expression_score_the_posed_mesh(now_sample, meshes):
    """Without the flag (the synthetic split: scans carry the expression), posed is scored."""
    import dataclasses

    ict, neutral, posed = meshes
    sample = dataclasses.replace(now_sample, meta={k: v for k, v in now_sample.meta.items()
                                                   if k != SCANS_NEUTRAL})
    pred = Prediction(status="ok", vertices=posed, neutral_vertices=neutral,
                      topology=ict.topology())
    row, _ = score_sample(sample, pred, PARAMS)
    only_posed, _ = score_sample(
        sample, Prediction(status="ok", vertices=posed, topology=ict.topology()), PARAMS)
    assert row["s2m_mesh"] == "posed"
    assert row["s2m_median_mm"] == pytest.approx(only_posed["s2m_median_mm"], rel=1e-9)


def test_fit_landmarks_gives_the_fitted_identity_without_expression():
    from methods.fit_landmarks import FitLandmarks
    from tests.test_fit_landmarks import _sample

    ict = load_ict("narrow")
    m = FitLandmarks({"landmarks": "gt"})
    m.ensure_loaded("cpu")
    p = m.predict_safe([_sample(ict, "a", (1, 1))])[0]
    assert p.status == "ok"
    assert p.neutral_vertices.shape == p.vertices.shape
    # the fitted blink closes the expressive mesh's eyes, not the neutral one's
    assert (eye_openness(p.topology.landmarks(p.vertices)) < 0.1).all()
    assert (eye_openness(p.topology.landmarks(p.neutral_vertices)) > 0.15).all()


def test_elam_ldl_gives_the_identity_without_expression(tmp_path):
    import torch

    from methods.elam_ldl.method import ElamLdl
    from methods.elam_ldl.model import NetSpec, ReconNet, export_state
    from tests.test_elam_ldl_method import synthetic_photo

    torch.manual_seed(0)
    net = ReconNet(NetSpec(depth=10, width=8, input_size=32, n_id=10))
    for layer in net.final_layers:
        torch.nn.init.normal_(layer.weight, std=1e-2)
    torch.save(export_state(net, {}, {"steps": 0}), tmp_path / "tiny.pt")
    m = ElamLdl({"checkpoint": str(tmp_path / "tiny.pt"), "landmarks": "gt"})
    m.ensure_loaded("cpu")
    p = m.predict(synthetic_photo())
    assert p.status == "ok"
    assert p.neutral_vertices.shape == p.vertices.shape
    assert np.abs(p.vertices - p.neutral_vertices).max() > 1e-6  # the expression is removed
    shape = m.decoder.shape
    id_part = p.neutral_vertices - shape.mean.numpy()
    # what is left is in the identity span only
    basis = shape.id_basis.numpy().reshape(shape.n_id, -1).T
    coef = np.linalg.lstsq(basis, id_part.reshape(-1), rcond=None)[0]
    assert np.abs(basis @ coef - id_part.reshape(-1)).max() < 1e-5
