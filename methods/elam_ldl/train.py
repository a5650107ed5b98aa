"""Training loop of the ELAM+LDL network, with resume and export.

Room: one function, :func:`train`, from a :class:`~methods.elam_ldl.config.TrainConfig` to
a trained network: prepared data (``data.py``), seeded initialisation, Adam with warm-up and
cosine decay, the losses of ``losses.py``, a tqdm bar with running losses, periodic atomic
checkpoints, exact resume, dev-set monitoring and the small float16 export that ships.

The losses see the photo, dlib's landmarks (ELAM-adjusted when ``use_elam``) and the
eye-state detector's P(closed): weak supervision, as the paper, plus two 3D signals on the
*synthetic* train rows only (issue 16, on by default): their identity
(``w_shape_synthetic``) and their expression weights outside the eyes
(``w_exp_synthetic``, :func:`expression_gram`). Opt-in (the counterfactual recipe,
``configs/counterfactual.yaml``): batches balanced by source with counterfactual eye swaps
and degradations (``counterfactual.py``); every batch comes from
:func:`training_batch`, then Deep3D's augmentation. The dev part (held-out training
subjects/groups, see ``data.py``) is only *measured* (eye-state F1 from the mesh, landmark
NME, and on synthetic dev rows the mesh error against the generator's mesh) and logged.

Determinism: the batch rows of step ``k`` come from a permutation seeded by
``(seed, epoch)`` (with source balancing: a draw seeded by ``(seed, k)``) and its
augmentation from generators seeded by ``(seed, k)``, so nothing
random has to be saved; a checkpoint holds the step, the network, the optimiser and the
config, and a resumed run continues bit-identically on CPU.

Run folder (``TrainConfig.run_dir()``)::

    last.pt          training checkpoint (float32 + Adam state), written atomically
    final.pt         the exported inference checkpoint (float16, ``model.export_state``)
    log.jsonl        one line per ``LOG_EVERY`` steps: losses, lr, seconds
    dev.jsonl        dev metrics at every ``dev_every`` steps and at the end
    config.json      the config of the run

Example::

    from methods.elam_ldl.config import TrainConfig
    from methods.elam_ldl.train import train
    res = train(TrainConfig.preset("elam-ldl", steps=200))
    res.export, res.dev
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from methods.base import read_torch_file
from methods.elam_ldl.config import RUN_ONLY_FIELDS, TrainConfig
from methods.elam_ldl.counterfactual import balanced_indices, degrade, row_groups, swap_eyes
from methods.elam_ldl.data import (
    SOURCE_CODES,
    ShapeBasis,
    TrainingData,
    augment_batch,
    batch_indices,
    make_batch,
    prepare_data,
)
from methods.elam_ldl.losses import landmark_targets, total_loss
from methods.elam_ldl.model import FaceDecoder, NetSpec, ReconNet, export_state, eye_shape_indices

logger = logging.getLogger(__name__)

TRAIN_FORMAT = "eyebench-elam-ldl-train"
LOG_EVERY = 25
LOSS_KEYS = ("total", "photo", "lm", "ldl", "reg", "gamma", "reflc", "feat", "shape",
             "exp_syn")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: the run folder.
        checkpoint: the last training checkpoint.
        export: the exported inference checkpoint(s) (run folder's ``final.pt`` first).
        steps: steps done in total.
        seconds: wall time of this call.
        dev: final dev metrics.
        counts: photos per source (seen, skipped, kept).
    """

    run_dir: Path
    checkpoint: Path
    export: list[Path]
    steps: int
    seconds: float
    dev: dict[str, Any]
    counts: dict[str, Any]


def net_spec(cfg: TrainConfig) -> NetSpec:
    """The architecture of a config."""
    return NetSpec(depth=cfg.depth, width=cfg.width, input_size=cfg.input_size, n_id=cfg.n_id,
                   crop_distance=cfg.crop_distance, align_rotation=cfg.align_rotation,
                   photo_region=cfg.photo_region, eye_branch=cfg.eye_branch,
                   landmark_id=cfg.landmark_id)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * lr_final`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    t = min(max(t, 0.0), 1.0)
    return cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def expression_gram() -> torch.Tensor:
    """(53, 53) :attr:`ShapeBasis.exp_gram_aligned` with the eye branch's blendshapes zeroed.

    The synthetic expression term supervises brows, cheeks, nose, jaw and mouth; eyelids and
    gaze (:data:`methods.elam_ldl.model.EYE_SHAPES`) stay with the weak signals (landmarks,
    ELAM, LDL), so the ablation still measures what ELAM and LDL do to the eyes.
    """
    gram = torch.as_tensor(ShapeBasis(1).exp_gram_aligned, dtype=torch.float32).clone()
    eyes = eye_shape_indices().reshape(-1)
    gram[eyes, :] = 0.0
    gram[:, eyes] = 0.0
    return gram


def step_losses(net: ReconNet, dec: FaceDecoder, batch: Any, cfg: TrainConfig,
                identity: Any | None = None, shape_gram: torch.Tensor | None = None,
                exp_gram: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Forward pass and every loss term of one batch (see ``losses.total_loss``)."""
    c = net.coefficients(batch.images, batch.eye_crops, batch.landmarks)
    geo = dec.geometry(c)
    out = dec.render(geo, c)
    targets = landmark_targets(batch.landmarks, batch.p_closed, cfg)
    return total_loss(cfg, c, geo.landmarks2d, targets, out, batch.images.permute(0, 2, 3, 1),
                      batch.valid, dec, identity, batch.shape_target, shape_gram,
                      batch.exp_target, exp_gram)


def training_batch(data: TrainingData, step: int, cfg: TrainConfig,
                   groups: np.ndarray | None = None) -> Any:
    """The augmented batch of step ``step`` (deterministic in ``cfg.seed`` and ``step``).

    Rows (balanced by group or by epoch permutation), counterfactual eye swaps,
    degradations, then Deep3D's geometric augmentation.
    """
    if cfg.balance_sources:
        rows = balanced_indices(data, step, cfg.batch_size, cfg, groups)
    else:
        rows = batch_indices(data.train_index, step, cfg.batch_size, cfg.seed)
    images, landmarks, p_closed = swap_eyes(data, rows, cfg, seed=step, groups=groups)
    if cfg.aug_degrade > 0 or cfg.aug_grey > 0 or cfg.aug_jpeg > 0:
        images = degrade(images, cfg, seed=step)
    batch = make_batch(data, rows, images, landmarks, p_closed)
    return augment_batch(batch, cfg, seed=cfg.seed * 1_000_003 + 7919 * step + 1)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUN_ONLY_FIELDS}


def load_training_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """A training checkpoint, checked against the config (``weights_only`` load).

    Raises:
        ValueError: unreadable, not a training checkpoint, or one of a different
            configuration.
    """
    state = read_torch_file(path, "ELAM+LDL training checkpoint", TRAIN_FORMAT,
                            keys=("config", "net", "optimizer", "step"))
    if _comparable(state["config"]) != _comparable(cfg.to_dict()):
        diff = sorted(k for k, v in _comparable(cfg.to_dict()).items()
                      if state["config"].get(k) != v)
        raise ValueError(
            f"the run folder {str(path.parent)!r} holds a run with other settings ({diff}); "
            f"choose another --output-dir or pass --no-resume to start over."
        )
    return state


@torch.no_grad()
def evaluate_dev(net: ReconNet, dec: FaceDecoder, data: TrainingData, cfg: TrainConfig,
                 device: str = "cpu", batch_size: int = 64) -> dict[str, Any]:
    """Dev metrics: eye-state accuracy/F1 from the mesh, landmark NME, synthetic mesh error.

    Eye state uses :func:`metrics.eye_openness` of the mesh's 3D landmarks and
    :data:`metrics.DEFAULT_CLOSED_THRESHOLD` (as the benchmark does); labels are the
    synthetic per-eye truth (half-closed eyes left out) and the pool's per-image label.
    NME: 2D error to the *detected* landmarks over the outer-eye-corner distance. Mesh error
    (synthetic rows): mean vertex distance in mm over the face region after a similarity
    alignment to the generator's mesh (same ICT topology).
    """
    import metrics as M

    idx = data.dev_index
    if len(idx) == 0:
        return {}
    was_training = net.training
    net.eval()
    opens, nmes, verts = [], [], []
    for s in range(0, len(idx), batch_size):
        rows = idx[s: s + batch_size]
        b = make_batch(data, rows).to(device)
        c = net.coefficients(b.images, b.eye_crops, b.landmarks)
        geo = dec.geometry(c)
        lmk3d = geo.vertices[:, dec.landmark_ids].cpu().numpy()
        opens.append(M.eye_openness(lmk3d))
        pred2d = geo.landmarks2d.cpu().numpy()
        tgt = b.landmarks.cpu().numpy()
        iod = np.linalg.norm(tgt[:, 36] - tgt[:, 45], axis=-1)
        nmes.append(np.linalg.norm(pred2d - tgt, axis=-1).mean(-1) / np.maximum(iod, 1e-6))
        verts.append(geo.vertices.cpu().numpy())
    net.train(was_training)
    openness = np.concatenate(opens)
    pred = M.eye_state_from_openness(openness, M.DEFAULT_CLOSED_THRESHOLD)
    labels = data.eye_label[idx].astype(np.int64)
    nme = np.concatenate(nmes)
    vertices = np.concatenate(verts)
    out: dict[str, Any] = {}
    for name, code in SOURCE_CODES.items():
        sel = data.source[idx] == code
        if not sel.any():
            continue
        entry: dict[str, Any] = {"n": int(sel.sum()), "nme": float(nme[sel].mean())}
        y, p = labels[sel].ravel(), pred[sel].ravel()
        keep = y >= 0
        if keep.any():
            sc = M.binary_scores(y[keep], p[keep])
            entry.update(eye_acc=float(sc.accuracy), eye_f1=float(sc.f1),
                         n_eyes=int(keep.sum()), n_closed=int((y[keep] == 1).sum()))
            lab, prd = labels[sel], pred[sel]
            wink = (lab >= 0).all(1) & (lab[:, 0] != lab[:, 1])
            if wink.any():  # both eyes right on faces with one eye closed
                entry.update(winks=int(wink.sum()),
                             winks_right=int((prd[wink] == lab[wink]).all(1).sum()))
        if name == "synthetic":
            entry["mesh_err_mm"] = _synthetic_mesh_error(data.ids[idx][sel], vertices[sel],
                                                         dec, cfg)
        out[name] = entry
    return out


def _synthetic_mesh_error(ids: np.ndarray, vertices: np.ndarray, dec: FaceDecoder,
                          cfg: TrainConfig) -> float:
    """Mean vertex error (mm) on the face region after a similarity alignment."""
    from benchmark.datasets.synthetic import SyntheticDataset
    from methods.facemodel import load_ict
    from metrics import umeyama

    ds = SyntheticDataset(split="train", n=cfg.synthetic_n, progress=False)
    region = load_ict("narrow").regions["face"]
    errs = []
    for sid, v in zip(ids, vertices):
        source, _, name = str(sid).partition(":")
        try:
            gt = ds.load_sample(name).gt_vertices[: dec.n_vertices]
        except KeyError:  # not a synthetic train sample of this config (tests, other data)
            continue
        tr = umeyama(v[region].astype(np.float64), gt[region].astype(np.float64))
        aligned = tr.apply(v[region].astype(np.float64))
        errs.append(np.linalg.norm(aligned - gt[region], axis=-1).mean() * 1000.0)
    return float(np.mean(errs)) if errs else float("nan")


def _machine() -> str:
    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, torch {torch.__version__}").strip()


def train(cfg: TrainConfig, command: str | None = None, progress: bool = True,
          data: TrainingData | None = None) -> TrainResult:
    """Trains (or resumes) one run and exports its inference checkpoint.

    Args:
        cfg: the configuration (validated here).
        command: the command line that started it (stored in the checkpoint's meta).
        progress: show progress bars.
        data: prepared data (default: :func:`prepare_data` of ``cfg``; tests pass their own).

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError: bad configuration, unusable data, or a run folder from another config.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    t_start = time.perf_counter()
    torch.set_num_threads(max(int(cfg.threads), 1))
    device = cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device.")
    spec = net_spec(cfg)
    if data is None:
        data = prepare_data(cfg, spec.crop_distance, progress=progress)
    train_rows = data.train_index
    if len(train_rows) == 0:
        raise ValueError("no training rows left after the dev hold-out.")
    if spec.eye_branch and data.eye_crops is None:
        raise ValueError("the eye branch needs eye crops in the prepared data; rebuild it "
                         "(prepare_data) or train with --no-eye-branch.")
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "last.pt"

    torch.manual_seed(cfg.seed)
    net = ReconNet(spec)
    eye_encoder = net.eye_branch.load_detector() if net.eye_branch is not None else None
    net = net.to(device)
    dec = FaceDecoder(spec).to(device)
    identity = None
    if cfg.identity_weights:
        from methods.elam_ldl.identity import IdentityLoss

        identity = IdentityLoss(cfg.identity_weights, device=device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    shape_gram = (torch.as_tensor(ShapeBasis(cfg.n_id).gram_aligned, dtype=torch.float32)
                  .to(device)
                  if cfg.w_shape_synthetic > 0 and data.shape_target is not None else None)
    exp_gram = (expression_gram().to(device)
                if cfg.w_exp_synthetic > 0 and data.exp_target is not None else None)
    groups = row_groups(data)
    step0 = 0
    elapsed0 = 0.0
    if cfg.resume and ckpt_path.is_file():
        state = load_training_state(ckpt_path, cfg)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        step0 = int(state["step"])
        elapsed0 = float(state.get("seconds", 0.0))
        logger.info("resuming %s at step %d", run_dir, step0)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if step0 == 0:  # a fresh run: logs of an earlier run in this folder are stale
        for name in ("log.jsonl", "dev.jsonl"):
            (run_dir / name).unlink(missing_ok=True)

    def save(step: int, seconds: float) -> None:
        _atomic_save({"format": TRAIN_FORMAT, "version": 1, "step": step,
                      "config": cfg.to_dict(), "spec": dataclasses.asdict(spec),
                      "net": net.state_dict(), "optimizer": opt.state_dict(),
                      "seconds": seconds, "data_key": data.key}, ckpt_path)

    net.train()
    running: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=step0, desc=f"train {cfg.variant}",
               disable=not progress, dynamic_ncols=True, unit="step")
    t_loop = time.perf_counter()
    log_fh = open(run_dir / "log.jsonl", "a", encoding="utf-8")
    try:
        for step in range(step0, cfg.steps):
            lr = learning_rate(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = training_batch(data, step, cfg, groups).to(device)
            terms = step_losses(net, dec, batch, cfg, identity, shape_gram, exp_gram)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            values = {k: float(terms[k].detach()) for k in LOSS_KEYS}
            if not math.isfinite(values["total"]):
                raise FloatingPointError(f"loss became {values['total']} at step {step}.")
            for k, v in values.items():
                running[k] = v if k not in running else 0.95 * running[k] + 0.05 * v
            bar.update(1)
            bar.set_postfix({k: f"{running[k]:.3g}" for k in ("total", "photo", "lm", "ldl",
                                                               "shape", "exp_syn")},
                            refresh=False)
            done = step + 1
            seconds = elapsed0 + time.perf_counter() - t_loop
            if done % LOG_EVERY == 0 or done == cfg.steps:
                log_fh.write(json.dumps({"step": done, "lr": lr, "seconds": round(seconds, 1),
                                         **{k: round(v, 6) for k, v in values.items()}}) + "\n")
                log_fh.flush()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done, seconds)
            if cfg.dev_every and done % cfg.dev_every == 0 and done < cfg.steps:
                _log_dev(run_dir, done, evaluate_dev(net, dec, data, cfg, device))
    finally:
        bar.close()
        log_fh.close()
    seconds_total = elapsed0 + time.perf_counter() - t_loop
    if step0 >= cfg.steps and not ckpt_path.is_file():
        save(cfg.steps, seconds_total)
    dev = evaluate_dev(net, dec, data, cfg, device)
    _log_dev(run_dir, cfg.steps, dev)
    meta = {
        "variant": cfg.variant, "use_elam": cfg.use_elam, "use_ldl": cfg.use_ldl,
        "trained_on": _trained_on(cfg), "photos": data.counts,
        "n_train": int(len(train_rows)), "n_dev": int(len(data.dev_index)),
        "steps": cfg.steps, "seed": cfg.seed, "command": command or "",
        "train_seconds": round(seconds_total, 1), "machine": _machine(),
        "threads": cfg.threads, "device": device, "data_key": data.key, "dev": dev,
        "identity_loss": bool(cfg.identity_weights),
        "eye_encoder": eye_encoder,
    }
    state = export_state(net.cpu(), cfg.to_dict(), meta)
    exports = [run_dir / "final.pt"]
    if cfg.export:
        exports.append(Path(cfg.export).expanduser())
    for path in exports:
        _atomic_save(state, path)
    return TrainResult(run_dir, ckpt_path, exports, cfg.steps,
                       time.perf_counter() - t_start, dev, data.counts)


def _trained_on(cfg: TrainConfig) -> list[str]:
    names = []
    if "synthetic" in cfg.sources:
        names.append(f"synthetic (train split, first {cfg.synthetic_n})")
    if "real-faces" in cfg.sources:
        names.append(f"real-faces (train part, pool seed {cfg.real_pool_seed})")
    names += [f"folder {f}" for f in cfg.folders]
    return names


def _log_dev(run_dir: Path, step: int, dev: dict[str, Any]) -> None:
    with open(run_dir / "dev.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, **dev}) + "\n")
    logger.info("dev at step %d: %s", step, dev)
