"""Training and evaluation of ELAM's eye-state detector, and its CLI subcommand.

Room: everything that produces ``methods/elam/weights/eye_state_cnn.pt`` and the accuracy
report next to it. Inference lives in :mod:`methods.elam.eye_detector`.

Training crops (all cut with the one rule of :mod:`methods.elam.eye_crops`, at 1.5x context
so augmentation can rotate and zoom without inventing borders):

* ``synthetic``: the synthetic dataset's ``train`` split; crops from ground-truth landmarks
  and from dlib's landmarks (the detector sees dlib crops at inference); labels from the
  ground-truth eye state (half-closed eyes are left out).
* ``real``: the *training part* of the research-only real-photo pool
  (:func:`benchmark.datasets.real_faces.split_real_faces`, seed 0, 20 % of groups held out):
  dlib-cut crops of CEW closed faces and UTKFace open faces (both eyes take the photo's
  label), and CEW's 24x24 eye patches (placed at the crop rule's scale: a CEW patch spans
  about 0.87 of our square, measured by template matching).

Augmentation (torch, per sample): rotation +-12 deg, scale 0.85-1.2, shift +-8 %,
resolution loss (down to 30-80 %), Gaussian blur (sigma 0.3-1.5 px), gamma 0.5-2,
contrast, brightness, an illumination ramp, Gaussian noise. Sampling balances sources and
labels (each source weighs the same; within a source, open and closed weigh the same).

Evaluation: per eye (0 = subject's right, 1 = left) accuracy, precision, recall and F1 with
"closed" positive at P > 0.5, on the synthetic ``test`` split (dlib and ground-truth crops)
and on the held-out real part (dlib crops of the held-out faces; held-out CEW patches).

CLI (:mod:`methods.elam.cli`, the ``train-eye-detector`` subcommand of ``python -m
benchmark``; also ``python -m methods.elam.train_eye_detector``)::

    python -m benchmark train-eye-detector --real-faces ../shared/data/real-faces --seed 0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN
from methods.elam.config import SOURCES, TrainConfig
from methods.elam.eye_crops import CROP_SIZE, ENLARGE, crop_square, cut_eye_crops
from methods.elam.eye_detector import FORMAT, EyeStateNet, load_checkpoint

logger = logging.getLogger(__name__)

#: Training crops are cut at this multiple of the crop rule's square (room for augmentation).
CONTEXT = 1.5
#: Side of a CEW eye patch as a fraction of the crop rule's square (template-matched on 116
#: CEW faces: patch side = 1.56 x the eye's landmark-box width; our square = 1.8 x).
CEW_PATCH_SCALE = 1.56 / 1.8


@dataclasses.dataclass
class CropSet:
    """Labelled canonical eye crops from one source.

    Attributes:
        name: e.g. ``synthetic-train-gt``, ``real-val-faces``.
        crops: (N, S, S) uint8 grey crops at ``CONTEXT`` (S = 48 for 32 px crops).
        labels: (N,) int8, 1 closed, 0 open.
        eye: (N,) int8 eye index of each crop.
    """

    name: str
    crops: np.ndarray
    labels: np.ndarray
    eye: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def empty(cls, name: str, size: int) -> CropSet:
        """A set with no crops."""
        return cls(name, np.zeros((0, size, size), np.uint8), np.zeros(0, np.int8),
                   np.zeros(0, np.int8))


# --------------------------------------------------------------------------------------------
# Crop sets
# --------------------------------------------------------------------------------------------

def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _cache_dir() -> Path:
    from methods.landmarks.cache import cache_root

    return cache_root() / "eye_crops"


def _cached(key: str, build: Any) -> CropSet:
    """Loads a crop set from the crop cache or builds and stores it."""
    path = _cache_dir() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as d:
                return CropSet(str(d["name"]), d["crops"], d["labels"], d["eye"])
        except Exception as exc:
            logger.warning("crop cache %s unreadable (%s); rebuilding", path, exc)
    cs: CropSet = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, name=np.array(cs.name), crops=cs.crops, labels=cs.labels,
                            eye=cs.eye)
        tmp.replace(path)
    except OSError as exc:
        logger.warning("cannot write crop cache %s: %s", path, exc)
    return cs


def _progress(it: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", leave=False, mininterval=1.0)


def pool_face_crops(root: Path, items: Sequence[Any], name: str, crop_size: int = CROP_SIZE
                    ) -> tuple[CropSet, dict[str, int]]:
    """dlib-cut crops of pool face photos (both eyes take the photo's label).

    Returns:
        The crop set and counts (``faces`` listed, ``detected`` by dlib).
    """
    from methods.landmarks import get_provider

    faces = [it for it in items if it.kind == "face"]
    provider = get_provider("dlib")
    size = int(round(crop_size * CONTEXT))
    ident = provider.identity()
    h = hashlib.sha256(f"{ident}:{crop_size}:{ENLARGE}:{CONTEXT}".encode())
    for it in faces:
        p = root / it.file
        h.update(f"{it.file}:{it.label}:{p.stat().st_size if p.is_file() else -1}".encode())
    key = f"{name}-{h.hexdigest()[:16]}"

    def build() -> CropSet:
        from methods.landmarks import read_image

        crops, labels, eyes = [], [], []
        for it in _progress(faces, len(faces), f"dlib crops {name}"):
            try:
                img = read_image(root / it.file)
            except ValueError:
                continue
            res = provider.detect(img)
            if not res.ok:
                continue
            c = cut_eye_crops(img, res.landmarks, crop_size, ENLARGE, CONTEXT)
            crops.extend(_to_u8(c))
            labels += [it.label, it.label]
            eyes += [0, 1]
        if not crops:
            return CropSet.empty(name, size)
        return CropSet(name, np.stack(crops), np.array(labels, np.int8), np.array(eyes, np.int8))

    cs = _cached(key, build)
    return cs, {"faces": len(faces), "detected": len(cs) // 2}


def pool_patch_crops(root: Path, items: Sequence[Any], name: str, crop_size: int = CROP_SIZE
                     ) -> CropSet:
    """CEW 24x24 eye patches placed at the crop rule's scale (eye 1 mirrored)."""
    from methods.landmarks import read_image

    patches = [it for it in items if it.kind == "eye"]
    size = int(round(crop_size * CONTEXT))
    h = hashlib.sha256(f"{crop_size}:{CEW_PATCH_SCALE}:{CONTEXT}".encode())
    for it in patches:
        h.update(f"{it.file}:{it.label}:{it.eye}".encode())
    key = f"{name}-{h.hexdigest()[:16]}"

    def build() -> CropSet:
        crops, labels, eyes = [], [], []
        for it in _progress(patches, len(patches), f"patches {name}"):
            try:
                g = read_image(root / it.file)[:, :, 0].astype(np.float32) / 255.0
            except ValueError:
                continue
            ph, pw = g.shape
            # the patch spans CEW_PATCH_SCALE of the crop square; the context square is
            # CONTEXT times larger, centred on the patch centre (border pixels repeat)
            side = max(ph, pw) / CEW_PATCH_SCALE * CONTEXT
            c = crop_square(g, pw / 2.0, ph / 2.0, side, size, mirror=(it.eye == 1))
            crops.append(_to_u8(np.clip(c, 0, 1)))
            labels.append(it.label)
            eyes.append(it.eye)
        if not crops:
            return CropSet.empty(name, size)
        return CropSet(name, np.stack(crops), np.array(labels, np.int8), np.array(eyes, np.int8))

    return _cached(key, build)


def synthetic_crops(
    split: str, landmarks: str, limit: int | None = None, crop_size: int = CROP_SIZE,
    options: dict[str, Any] | None = None, keep_half: bool = False,
) -> tuple[CropSet, dict[str, int]]:
    """Crops of the synthetic dataset's eyes.

    Args:
        split: ``train`` or ``test``.
        landmarks: ``gt`` (the sample's landmarks) or ``dlib`` (detected; undetected faces
            are skipped).
        limit: first ``limit`` samples only.
        crop_size: crop side.
        options: synthetic dataset options.
        keep_half: keep half-closed eyes with label -1 (reported, never scored or trained
            on); default: left out.

    Returns:
        The crop set and counts (``samples`` listed, ``crops`` cut).
    """
    from benchmark.datasets import DATASETS
    from methods.landmarks import as_image, get_provider

    ds = DATASETS.get("synthetic")(split=split, **(options or {}))
    ids = ds.sample_ids()[: limit] if limit else ds.sample_ids()
    provider = get_provider(landmarks)
    size = int(round(crop_size * CONTEXT))
    name = f"synthetic-{split}-{landmarks}"
    key_src = (f"{ds.revision()}:{len(ids)}:{provider.identity()}:{crop_size}:{ENLARGE}:"
               f"{CONTEXT}:{keep_half}")
    key = f"{name}-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}"

    def build() -> CropSet:
        crops, labels, eyes = [], [], []
        for sid in _progress(ids, len(ids), f"crops {name}"):
            s = ds.load_sample(sid)
            state = np.asarray(s.eye_state)
            allowed = (EYE_OPEN, EYE_CLOSED, EYE_UNKNOWN) if keep_half else (EYE_OPEN, EYE_CLOSED)
            if not np.isin(state, allowed).any():
                continue
            img = as_image(s.load_image())
            res = provider.detect_sample(s) if landmarks == "gt" else provider.detect(img)
            if not res.ok:
                continue
            c = cut_eye_crops(img, res.landmarks, crop_size, ENLARGE, CONTEXT)
            for e in (0, 1):
                if state[e] in allowed:
                    crops.append(_to_u8(c[e]))
                    labels.append(int(state[e]))
                    eyes.append(e)
        if not crops:
            return CropSet.empty(name, size)
        return CropSet(name, np.stack(crops), np.array(labels, np.int8), np.array(eyes, np.int8))

    cs = _cached(key, build)
    return cs, {"samples": len(ids), "crops": len(cs), "dataset_revision": ds.revision()}


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------

def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur; sigma (B,) in pixels (0 = identity)."""
    b, _, h, w = x.shape
    radius = 4
    k = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.clamp(min=1e-3)[:, None]
    ker = torch.exp(-0.5 * (k[None] / s) ** 2)
    ker = ker / ker.sum(dim=1, keepdim=True)  # (B, K)
    xp = F.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="replicate")  # (1,B,..)
    y = F.conv2d(xp, ker[:, None, None, :], groups=b)
    y = F.conv2d(y, ker[:, None, :, None], groups=b)
    return y.transpose(0, 1)


def augment(x: torch.Tensor, gen: torch.Generator, out_size: int = CROP_SIZE) -> torch.Tensor:
    """Random geometric and photometric augmentation of context crops.

    Args:
        x: (B, 1, S, S) crops in [0, 1] at ``CONTEXT`` (S = CONTEXT * out_size).
        gen: random generator (seeded by the caller).
        out_size: output side.

    Returns:
        (B, 1, out_size, out_size) augmented crops in [0, 1].
    """
    b = x.shape[0]
    k = out_size / x.shape[-1]  # the output square's half-size in normalised input coords
    ang = _u(gen, b, -12.0, 12.0) * math.pi / 180.0
    scale = torch.exp(_u(gen, b, math.log(0.85), math.log(1.2)))
    tx, ty = _u(gen, b, -0.08, 0.08) * 2 * k, _u(gen, b, -0.08, 0.08) * 2 * k
    cos, sin = torch.cos(ang) * scale * k, torch.sin(ang) * scale * k
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, 1, out_size, out_size], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # resolution loss: small faces in photos
    low = torch.rand(b, generator=gen) < 0.3
    if low.any():
        f = float(_u(gen, 1, 0.3, 0.8))
        n = max(4, int(round(out_size * f)))
        small = F.interpolate(y[low], size=(n, n), mode="area")
        y = y.clone()
        y[low] = F.interpolate(small, size=(out_size, out_size), mode="bilinear",
                               align_corners=False)
    # blur
    sig = _u(gen, b, 0.3, 1.5) * (torch.rand(b, generator=gen) < 0.4)
    y = _gaussian_blur(y, sig)
    # lighting: gamma, contrast, brightness, a linear illumination ramp
    gamma = torch.exp(_u(gen, b, math.log(0.5), math.log(2.0)))[:, None, None, None]
    y = y.clamp(1e-4, 1.0) ** gamma
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * _u(gen, b, 0.6, 1.4)[:, None, None, None] + mean
    y = y + _u(gen, b, -0.15, 0.15)[:, None, None, None]
    lin = torch.linspace(-0.5, 0.5, out_size)
    dirn = _u(gen, b, 0, 2 * math.pi)
    ramp = torch.cos(dirn)[:, None, None] * lin[None, None, :] + \
        torch.sin(dirn)[:, None, None] * lin[None, :, None]
    y = y + (_u(gen, b, 0.0, 0.25)[:, None, None] * ramp)[:, None]
    # sensor noise
    noise = _u(gen, b, 0.0, 0.06) * (torch.rand(b, generator=gen) < 0.5)
    y = y + noise[:, None, None, None] * torch.randn(y.shape, generator=gen)
    return y.clamp(0.0, 1.0)


#: Eye region of a canonical context crop for :func:`swap_context`: an ellipse centred on the
#: crop, semi-axes in eye widths (the crop rule's square is ``ENLARGE`` eye widths), with a
#: Gaussian edge. It holds the lids and lashes of an open or closed eye, not the brow.
SWAP_SEMI_AXES = (0.62, 0.36)
SWAP_EDGE = 0.08


def eye_region_weight(size: int, out_size: int = CROP_SIZE) -> torch.Tensor:
    """(size, size) blend weight of the eye region in a context crop of side ``size``."""
    eye_w = out_size / ENLARGE  # eye width in context-crop pixels
    c = (size - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    r = torch.sqrt(((xx - c) / (SWAP_SEMI_AXES[0] * eye_w)) ** 2
                   + ((yy - c) / (SWAP_SEMI_AXES[1] * eye_w)) ** 2)
    return torch.sigmoid((1.0 - r) / SWAP_EDGE)


def swap_context(x: torch.Tensor, group: torch.Tensor, gen: torch.Generator, prob: float,
                 out_size: int = CROP_SIZE) -> torch.Tensor:
    """Counterfactual crops: the eye of one crop in the context of a crop from another set.

    For a share ``prob`` of the batch, the eye region (:func:`eye_region_weight`) of the
    crop is kept and everything around it (skin, brow, framing, resolution, watermark) is
    taken from a random crop of another training set (``group`` differs; any label), the
    eye's brightness shifted to the new context's at the region's edge. The label stays the
    eye's, so the context carries no information about it (issue 16: CEW-closed vs
    UTKFace-open crops differ in everything around the eye).

    Args:
        x: (B, 1, S, S) context crops in [0, 1] (unaugmented; augmentation comes after).
        group: (B,) context group of each crop (training set and label): donors come from
            another group.
        gen: random generator.
        prob: share of crops that get a new context.
        out_size: side of the crop rule's square (sets the eye region's size).

    Returns:
        The batch with new contexts (same shape; a new tensor).
    """
    b, s = x.shape[0], x.shape[-1]
    if prob <= 0 or b < 2:
        return x
    w = eye_region_weight(s, out_size)
    ring = (w > 0.1) & (w < 0.9)
    out = x.clone()
    chosen = torch.nonzero(torch.rand(b, generator=gen) < prob).flatten()
    for i in chosen.tolist():
        others = torch.nonzero(group != group[i]).flatten()
        if len(others) == 0:
            continue
        j = int(others[torch.randint(len(others), (1,), generator=gen)])
        eye = x[i, 0] - x[i, 0][ring].mean() + x[j, 0][ring].mean()
        out[i, 0] = (w * eye + (1.0 - w) * x[j, 0]).clamp(0.0, 1.0)
    return out


def occlude(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, prob: float,
            out_size: int = CROP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Covers the eye of a share ``prob`` of the crops with a flat occluder; label: open.

    The occluder is a rectangle or an ellipse (random, rotated up to +-20 deg) that covers
    the eye region of :func:`eye_region_weight` with a margin, filled with one grey level:
    the crop's own median (skin), a dark level (sunglasses) or a random one, with a hard or
    a soft edge. Its label is *open* (0): P(closed) must come from visible closure
    evidence, and a covered eye shows none; ELAM then leaves the landmarks of a covered eye
    (sunglasses, a hand, hair) alone instead of closing them.

    Returns:
        ``(crops, labels)``: new tensors.
    """
    b, s = x.shape[0], x.shape[-1]
    if prob <= 0:
        return x, y
    out, lab = x.clone(), y.clone()
    eye_w = out_size / ENLARGE
    c = (s - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32),
                            torch.arange(s, dtype=torch.float32), indexing="ij")
    chosen = torch.nonzero(torch.rand(b, generator=gen) < prob).flatten()
    for i in chosen.tolist():
        u = torch.rand(8, generator=gen)
        half_w = eye_w * (0.75 + 0.35 * float(u[0]))
        half_h = eye_w * (0.45 + 0.25 * float(u[1]))
        ang = (float(u[2]) - 0.5) * (40.0 * math.pi / 180.0)
        dx = xx - c - (float(u[3]) - 0.5) * 0.2 * eye_w
        dy = yy - c - (float(u[4]) - 0.5) * 0.2 * eye_w
        ax = (dx * math.cos(ang) + dy * math.sin(ang)) / half_w
        ay = (-dx * math.sin(ang) + dy * math.cos(ang)) / half_h
        dist = torch.maximum(ax.abs(), ay.abs()) if u[5] < 0.5 else torch.sqrt(ax ** 2 + ay ** 2)
        edge = 0.02 if u[6] < 0.5 else 0.06
        w = torch.sigmoid((1.0 - dist) / edge + 4.0)  # covered inside, edge falls off outside
        kind = float(u[7])
        level = (x[i, 0].median() if kind < 0.5 else
                 torch.rand(1, generator=gen)[0] * 0.2 if kind < 0.75 else
                 torch.rand(1, generator=gen)[0])
        out[i, 0] = w * level + (1.0 - w) * x[i, 0]
        lab[i] = 0.0
    return out, lab


def center_crop(x: torch.Tensor, out_size: int = CROP_SIZE) -> torch.Tensor:
    """The crop rule's square from context crops (no augmentation)."""
    off = (x.shape[-1] - out_size) // 2
    return x[..., off:off + out_size, off:off + out_size]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def binary_report(labels: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 (closed positive) of P(closed) > ``threshold``."""
    from metrics.eyes import binary_scores

    y = np.asarray(labels).astype(np.int8)
    pred = (np.asarray(prob) > threshold).astype(np.int8)
    s = binary_scores(y, pred)
    return {"n": s.n, "n_closed": int(s.tp + s.fn), "accuracy": s.accuracy,
            "precision": s.precision, "recall": s.recall, "f1": s.f1}


@torch.no_grad()
def predict_set(net: EyeStateNet, cs: CropSet, crop_size: int = CROP_SIZE,
                batch: int = 512) -> np.ndarray:
    """P(closed) of every crop of a set (centre crop, no augmentation)."""
    net.eval()
    out = []
    for i in range(0, len(cs), batch):
        x = torch.as_tensor(cs.crops[i:i + batch], dtype=torch.float32)[:, None] / 255.0
        out.append(torch.sigmoid(net(center_crop(x, crop_size))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate_sets(net: EyeStateNet, sets: Sequence[CropSet], crop_size: int = CROP_SIZE
                  ) -> dict[str, Any]:
    """Per-set, per-eye and both-eye scores of a network."""
    out: dict[str, Any] = {}
    for cs in sets:
        if not len(cs):
            continue
        prob = predict_set(net, cs, crop_size)
        entry: dict[str, Any] = {"all": binary_report(cs.labels, prob)}
        half = cs.labels == EYE_UNKNOWN
        if half.any():
            entry["half"] = {"n": int(half.sum()), "mean_p_closed": float(prob[half].mean()),
                             "share_p_above_0.5": float((prob[half] > 0.5).mean())}
        for e in (0, 1):
            m = cs.eye == e
            if (m & ~half).any():
                entry[f"eye{e}"] = binary_report(cs.labels[m], prob[m])
        out[cs.name] = entry
    return out


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    """What :func:`train_eye_detector` produced.

    Attributes:
        weights: the weights file written.
        report: the JSON report written.
        metrics: evaluation scores per held-out set (see :func:`evaluate_sets`).
        train_counts: crops per training set.
    """

    weights: Path
    report: Path
    metrics: dict[str, Any]
    train_counts: dict[str, int]


def build_sets(cfg: TrainConfig, with_train: bool = True
               ) -> tuple[list[CropSet], list[CropSet], dict[str, Any]]:
    """Training sets (for ``cfg.sources``) and every evaluation set that can be built.

    Raises:
        ValueError: a requested source has no data, or (``with_train``) no training crops.
    """
    if not with_train:
        cfg = dataclasses.replace(cfg, sources=())
    from benchmark.datasets.real_faces import default_root, split_real_faces

    train: list[CropSet] = []
    evals: list[CropSet] = []
    info: dict[str, Any] = {}
    # synthetic (train for training if asked; test always evaluated when available)
    try:
        from benchmark.datasets import DATASETS

        DATASETS.get("synthetic")
        have_synth = True
    except Exception as exc:  # not written yet / import error
        logger.warning("synthetic dataset unavailable: %s", exc)
        have_synth = False
    if have_synth:
        opts = cfg.synthetic_options
        if "synthetic" in cfg.sources:
            for lm in ("gt", "dlib"):
                cs, cnt = synthetic_crops("train", lm, cfg.synthetic_limit, cfg.crop_size, opts)
                train.append(cs)
                info[cs.name] = cnt
        for lm in ("dlib", "gt"):
            cs, cnt = synthetic_crops("test", lm, None, cfg.crop_size, opts, keep_half=True)
            evals.append(cs)
            info[cs.name] = cnt
    elif "synthetic" in cfg.sources:
        raise ValueError(
            "source 'synthetic' asked for, but the synthetic dataset cannot be loaded."
        )
    # real pool
    root = Path(cfg.real_faces).expanduser() if cfg.real_faces else default_root()
    if root is not None and root.is_dir():
        split = split_real_faces(root, cfg.pool_seed, cfg.val_fraction)
        info["pool"] = {"root": str(root), "seed": cfg.pool_seed, "val_fraction": cfg.val_fraction}
        if "real" in cfg.sources:
            cs, cnt = pool_face_crops(root, split.train, "real-train-faces", cfg.crop_size)
            train.append(cs)
            info[cs.name] = cnt
            train.append(pool_patch_crops(root, split.train, "real-train-cew-patches",
                                          cfg.crop_size))
        cs, cnt = pool_face_crops(root, split.val, "real-val-faces", cfg.crop_size)
        evals.append(cs)
        info[cs.name] = cnt
        evals.append(pool_patch_crops(root, split.val, "real-val-cew-patches", cfg.crop_size))
    elif "real" in cfg.sources:
        raise ValueError(
            "source 'real' asked for, but no real-faces pool was found; pass --real-faces DIR "
            "or set EYEBENCH_REAL_FACES."
        )
    train = [cs for cs in train if len(cs)]
    if with_train and not train:
        raise ValueError("no training crops: give --sources synthetic and/or real with data.")
    return train, evals, info


def _balanced_weights(sets: Sequence[CropSet]) -> np.ndarray:
    """Sampling weights: every set the same mass, open and closed halves of it."""
    ws = []
    for cs in sets:
        w = np.zeros(len(cs))
        present = [lab for lab in (0, 1) if (cs.labels == lab).any()]
        for lab in present:
            m = cs.labels == lab
            w[m] = 1.0 / (m.sum() * len(present))
        ws.append(w / len(sets))
    return np.concatenate(ws)


def fit_network(train_sets: Sequence[CropSet], cfg: TrainConfig) -> tuple[EyeStateNet, list[float]]:
    """Trains a fresh :class:`EyeStateNet` on crop sets (balanced sampling, augmentation).

    Args:
        train_sets: non-empty crop sets at ``CONTEXT``.
        cfg: options (epochs, batch size, learning rate, width, crop size, seed).

    Returns:
        The network in eval mode and the mean loss per epoch.
    """
    from tqdm.auto import tqdm

    if not train_sets or not sum(len(cs) for cs in train_sets):
        raise ValueError("fit_network needs at least one non-empty crop set.")
    crops = torch.as_tensor(np.concatenate([cs.crops for cs in train_sets]))
    labels = torch.as_tensor(np.concatenate([cs.labels for cs in train_sets]), dtype=torch.float32)
    weights = torch.as_tensor(_balanced_weights(train_sets))
    # context donors: another set, or the same set's other label (CEW closed and UTKFace
    # open faces share one set)
    groups = torch.as_tensor(np.concatenate([2 * k + cs.labels.astype(np.int64)
                                             for k, cs in enumerate(train_sets)]))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = EyeStateNet(width=cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = cfg.samples_per_epoch or len(labels)
    steps_per_epoch = max(1, per_epoch // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total,
                                                pct_start=0.15)
    history: list[float] = []
    bar = tqdm(total=total, desc="train eye-state CNN", unit="step", mininterval=1.0,
               disable=total < 50)
    for epoch in range(cfg.epochs):
        net.train()
        idx = torch.multinomial(weights, steps_per_epoch * cfg.batch_size, replacement=True,
                                generator=gen)
        run_loss = 0.0
        for step in range(steps_per_epoch):
            bi = idx[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = crops[bi].to(torch.float32)[:, None] / 255.0
            x = swap_context(x, groups[bi], gen, cfg.context_swap, cfg.crop_size)
            x, y = occlude(x, labels[bi], gen, cfg.occlude, cfg.crop_size)
            x = augment(x, gen, cfg.crop_size)
            # label smoothing: some "open" photos are squints, some CEW faces half-open
            y = y * 0.95 + 0.025
            loss = F.binary_cross_entropy_with_logits(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss.detach())
            bar.update(1)
        history.append(run_loss / steps_per_epoch)
        bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.3f}")
    bar.close()
    return net.eval(), history


def save_checkpoint(net: EyeStateNet, path: str | Path, cfg: TrainConfig, meta: dict[str, Any]
                    ) -> Path:
    """Writes a weights file that :func:`~methods.elam.eye_detector.load_checkpoint` reads."""
    ckpt = {
        "format": FORMAT,
        "version": 1,
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "config": {"crop_size": cfg.crop_size, "enlarge": ENLARGE, "width": cfg.width},
        "meta": meta,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    load_checkpoint(path)  # the file must load with weights_only=True (plain values only)
    return path


def train_eye_detector(cfg: TrainConfig, command: str | None = None) -> TrainResult:
    """Trains the eye-state CNN, evaluates it on every held-out set and writes both files.

    Args:
        cfg: the options.
        command: the command line to record in the checkpoint (reproduction).

    Returns:
        The :class:`TrainResult`.

    Raises:
        ValueError: bad sources or no data.
    """
    bad = [s for s in cfg.sources if s not in SOURCES]
    if bad or not cfg.sources:
        raise ValueError(f"sources must be among {', '.join(SOURCES)}, got {cfg.sources!r}.")
    torch.set_num_threads(max(1, cfg.threads))
    t_start = time.time()
    train_sets, eval_sets, info = build_sets(cfg)
    counts = {cs.name: len(cs) for cs in train_sets}
    logger.info("training crops: %s", counts)
    net, history = fit_network(train_sets, cfg)
    metrics = evaluate_sets(net, eval_sets, cfg.crop_size)
    out = Path(cfg.output)
    report = Path(cfg.report) if cfg.report else out.with_suffix(".json")
    meta = {
        "trained_on": sorted(counts),
        "train_crops": counts,
        "sources": list(cfg.sources),
        "seed": cfg.seed,
        "pool_seed": cfg.pool_seed,
        "val_fraction": cfg.val_fraction,
        "epochs": cfg.epochs,
        "context_swap": cfg.context_swap,
        "occlude": cfg.occlude,
        "command": command or "",
        "synthetic_revision": next((v["dataset_revision"] for k, v in info.items()
                                    if k.startswith("synthetic-train") and isinstance(v, dict)),
                                   None),
        "torch": str(torch.__version__),
    }
    # the checkpoint's meta is deterministic (same seed and data -> same bytes); timings
    # go to the report only
    save_checkpoint(net, out, cfg, meta)
    write_report(report, metrics, {**meta, "data": info, "loss_per_epoch": history,
                                   "weights": str(out),
                                   "seconds": round(time.time() - t_start, 1)})
    return TrainResult(weights=out, report=report, metrics=metrics, train_counts=counts)


def write_report(path: Path, metrics: dict[str, Any], meta: dict[str, Any]) -> None:
    """Writes the evaluation report as JSON (NaN as null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean({"metrics": metrics, "meta": meta}), indent=1) + "\n")


def evaluate_weights(weights: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """Scores existing weights on every held-out set (no training)."""
    ckpt = load_checkpoint(weights)
    c = ckpt.get("config", {})
    net = EyeStateNet(width=int(c.get("width", 16)))
    net.load_state_dict(ckpt["state_dict"])
    _, evals, _ = build_sets(cfg, with_train=False)
    return evaluate_sets(net, evals, int(c.get("crop_size", CROP_SIZE)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m methods.elam.train_eye_detector``: the ``train-eye-detector`` subcommand."""
    from methods.elam.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
