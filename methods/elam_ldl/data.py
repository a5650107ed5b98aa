"""Training data of the ELAM+LDL network: photos -> aligned crops + weak labels, built once.

Room: turning the training sources into arrays the training loop samples from, and the
batch augmentation. The supervision is the photo itself, dlib's 68 landmarks and the
eye-state detector's P(closed) per eye (ELAM's input); the 3D ground truth stored is each
synthetic row's identity target and expression weights (:class:`ShapeBasis`), which only
the ``w_shape_synthetic`` / ``w_exp_synthetic`` terms read.

Sources (``TrainConfig.sources`` / ``folders``):

* ``synthetic``: the first ``synthetic_n`` samples of the synthetic ``train`` split
  (generated on demand and cached; the ``test`` split is never touched);
* ``real-faces``: the face photos of the *train* part of the research-only pool
  (:func:`benchmark.datasets.real_faces.split_real_faces`, seed 0: the held-out part is the
  ``real-faces-val`` evaluation set and the eye-state detector's validation set);
* any folder of photos (recursive; no labels needed).

For every photo: dlib's landmarks through the on-disk landmark cache (detected once, ever);
photos where dlib finds no face are skipped and counted; P(closed) per eye from the shipped
eye-state detector (:class:`methods.elam.eye_detector.EyeStateDetector`); the crop of
:mod:`methods.elam_ldl.align`. The result is cached as one ``.npz`` under
``<cache>/elam_ldl/data/`` keyed by everything it depends on (sources, sizes, detector
weights, landmark provider). Eye labels (synthetic ground truth per eye, the pool's label per
image) are stored for the *dev* part only, which is held out of training for monitoring: a
seeded ``dev_fraction`` of synthetic subjects and of real-pool groups.

Augmentation (:func:`augment_batch`, torch, per sample, seeded per step): scale, in-plane
rotation, shift, horizontal flip (landmarks re-indexed, eyes swapped), colour gain; crops,
validity masks and landmarks move together.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from methods.elam_ldl.config import REAL_SOURCE, SYNTHETIC_SOURCE, TrainConfig

logger = logging.getLogger(__name__)

#: Version of the prepared-data format and recipe (part of the cache key).
DATA_VERSION = "4"
SOURCE_CODES = {SYNTHETIC_SOURCE: 0, REAL_SOURCE: 1, "folder": 2}

#: iBUG-68 index of each landmark's mirror image (horizontal flip).
FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65],
    dtype=np.int64,
)


@dataclasses.dataclass
class TrainingData:
    """Prepared crops and weak labels (all arrays share the first dimension N).

    Attributes:
        images: (N, S, S, 3) uint8 aligned crops.
        valid: (N, S, S) bool crop pixels inside the photo.
        landmarks: (N, 68, 2) float32 detected landmarks in crop pixels (raw, not ELAM'd).
        p_closed: (N, 2) float32 eye-state detector P(closed), eye 0 then eye 1.
        eye_crops: (N, 2, s, s) float16 canonical grey eye crops of the photo
            (:func:`methods.elam.eye_crops.cut_eye_crops`, the detector's rule): the eye
            branch's input; ``None`` in data prepared before it.
        source: (N,) int8 :data:`SOURCE_CODES`.
        dev: (N,) bool held out for monitoring.
        eye_label: (N, 2) int8 per-eye labels (dev rows only; -1 elsewhere or unknown).
        ids: (N,) str ``<source>:<id>``.
        counts: per source: photos seen, skipped (no face / error), kept.
        key: cache key.
        shape_target: (N, n_id) float32 identity coefficients of the synthetic rows' true
            neutral face (:meth:`ShapeBasis.project`), NaN on every other row; ``None`` when the
            data was built without them.
        exp_target: (N, 53) float32 ICT expression weights of the synthetic rows (the
            generator's), NaN on every other row; ``None`` in data prepared before it.
    """

    images: np.ndarray
    valid: np.ndarray
    landmarks: np.ndarray
    p_closed: np.ndarray
    source: np.ndarray
    dev: np.ndarray
    eye_label: np.ndarray
    ids: np.ndarray
    counts: dict[str, dict[str, int]]
    key: str
    shape_target: np.ndarray | None = None
    eye_crops: np.ndarray | None = None
    exp_target: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def train_index(self) -> np.ndarray:
        """Rows used for training."""
        return np.flatnonzero(~self.dev)

    @property
    def dev_index(self) -> np.ndarray:
        """Held-out dev rows."""
        return np.flatnonzero(self.dev)


def in_dev(group: str, fraction: float) -> bool:
    """Whether a subject/group belongs to the dev part (seeded hash, like the pool split)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"elam-ldl-dev:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


# ------------------------------------------------------------------------------ sources


@dataclasses.dataclass
class _Photo:
    source: str
    id: str
    group: str
    load: Any  # () -> (H, W, 3) uint8
    eye_label: tuple[int, int]
    gt_landmarks: np.ndarray | None = None  # the dataset's own landmarks (``landmarks=gt``)
    neutral: np.ndarray | None = None  # synthetic only: the true neutral mesh (V, 3) metres
    expression: np.ndarray | None = None  # synthetic only: the true (53,) expression weights


def _synthetic_photos(cfg: TrainConfig) -> list[_Photo]:
    from benchmark.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(split="train", n=cfg.synthetic_n, progress=True)
    ds.prepare()
    out = []
    for sid in ds.sample_ids():
        s = ds.load_sample(sid)
        neutral = ds.neutral_vertices(sid)
        out.append(_Photo(SYNTHETIC_SOURCE, sid, str(s.subject), s.load_image,
                          (int(s.eye_state[0]), int(s.eye_state[1])), s.landmarks2d, neutral,
                          ds.expression_coeffs(sid)))
    return out


def _real_photos(cfg: TrainConfig) -> list[_Photo]:
    from benchmark.datasets.images import read_image
    from benchmark.datasets.real_faces import default_root, split_real_faces

    root = Path(cfg.real_faces).expanduser() if cfg.real_faces else default_root()
    if root is None:
        raise ValueError("the real-faces source needs the research-only pool: set "
                         "EYEBENCH_REAL_FACES=/path/to/real-faces or --real-faces, or train "
                         "with --sources synthetic.")
    split = split_real_faces(root, cfg.real_pool_seed)
    return [_Photo(REAL_SOURCE, it.file, it.group, lambda p=root / it.file: read_image(p),
                   (it.label, it.label)) for it in split.train if it.kind == "face"]


def _folder_photos(folder: str) -> list[_Photo]:
    from benchmark.datasets.images import IMAGE_EXTENSIONS, read_image

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"training folder {str(root)!r} does not exist.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"training folder {str(root)!r} holds no images.")
    return [_Photo("folder", str(p.relative_to(root)), f"{root.name}/{p.relative_to(root)}",
                   lambda p=p: read_image(p), (-1, -1)) for p in files]


def _folder_signature(folder: str) -> str:
    from benchmark.datasets.images import IMAGE_EXTENSIONS

    root = Path(folder).expanduser()
    h = hashlib.sha256(str(root.resolve()).encode())
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            h.update(f"{p.relative_to(root)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------ shape targets


class ShapeBasis:
    """The network's identity span over the face region: projections and squared error.

    The first ``n_id`` ICT identity modes restricted to the narrow mesh's ``face`` region.
    :meth:`project` gives the coefficients of the least-squares fit of a neutral mesh (the
    synthetic truth uses 100 modes plus smooth displacements, so this is its closest
    reachable face); :attr:`gram` turns a coefficient difference ``d`` into the mean squared
    vertex distance over the region in mm^2: ``d^T G d``.

    :attr:`gram_aligned` (what training uses) first removes from the displacement ``M d`` its
    least-squares part along the 7 directions of a similarity transform at the mean face
    (uniform scale about the centroid, 3 translations, 3 infinitesimal rotations): the error
    left after a (first-order) similarity alignment, as the scan-to-mesh protocol aligns. A
    single photo cannot tell a face's size from its distance, and on the synthetic training
    subjects that similarity part is 55 % of the mean face's error (18.7 mm^2 in all,
    8.4 mm^2 after removing it): without the projection the target is dominated by what
    no image shows.

    :attr:`exp_gram_aligned` is the same for the ICT expression blendshapes (all 53, in the
    model's order): ``e^T G_e e`` is the mean squared face-region displacement (mm^2, after
    the similarity part) of an expression weight difference ``e``; ``n_exp`` their count.
    Both are diagonal blocks of :attr:`joint_gram_aligned`, the same for the stacked
    ``[identity, expression]`` difference (whole-mesh errors need its cross terms).
    """

    def __init__(self, n_id: int) -> None:
        from methods.facemodel.ict import load_ict

        model = load_ict("narrow")
        self.n_id = int(n_id)
        self.n_vertices = int(model.n_vertices)
        region = np.asarray(model.regions["face"])
        self.region = np.flatnonzero(region) if region.dtype == bool else region
        basis = model.id_basis[: self.n_id, self.region].astype(np.float64)  # (K, R, 3)
        self._mean = model.mean[self.region].astype(np.float64)
        self._matrix = basis.reshape(self.n_id, -1).T  # (3R, K)
        n = len(self.region)
        self.gram = (self._matrix.T @ self._matrix) / n * 1e6
        exp = model.exp_basis[:, self.region].astype(np.float64)  # (J, R, 3)
        self.n_exp = int(exp.shape[0])
        joint = np.concatenate([self._matrix, exp.reshape(self.n_exp, -1).T], 1)
        q = np.linalg.qr(similarity_directions(self._mean))[0]  # (3R, 7) orthonormal
        residual = joint - q @ (q.T @ joint)
        self.joint_gram_aligned = (residual.T @ residual) / n * 1e6
        self.gram_aligned = self.joint_gram_aligned[: self.n_id, : self.n_id]
        self.exp_gram_aligned = self.joint_gram_aligned[self.n_id:, self.n_id:]
        self._pinv = np.linalg.pinv(self._matrix)  # (K, 3R): one product per projection

    def project(self, neutral: np.ndarray) -> np.ndarray:
        """(n_id,) float32 coefficients of the closest face in span.

        ``neutral``: full or narrow ICT vertices, metres.
        """
        target = (np.asarray(neutral, np.float64)[: self.n_vertices][self.region]
                  - self._mean).ravel()
        return (self._pinv @ target).astype(np.float32)


def expression_mirror(names: tuple[str, ...]) -> np.ndarray:
    """Index of each ICT blendshape's mirror image (horizontal flip of the face).

    ``_L`` <-> ``_R``, ``jawLeft`` <-> ``jawRight``, ``mouthLeft`` <-> ``mouthRight``; the
    others (``jawOpen``, ``mouthFunnel``, ...) map to themselves. Weights of a mirrored face:
    ``w[expression_mirror(names)]``.

    Raises:
        ValueError: a name's mirror is not in ``names``.
    """
    swaps = {"jawLeft": "jawRight", "jawRight": "jawLeft",
             "mouthLeft": "mouthRight", "mouthRight": "mouthLeft"}
    out = []
    for name in names:
        if name in swaps:
            other = swaps[name]
        elif name.endswith("_L"):
            other = name[:-2] + "_R"
        elif name.endswith("_R"):
            other = name[:-2] + "_L"
        else:
            other = name
        if other not in names:
            raise ValueError(f"blendshape {name!r} has no mirror {other!r} in the model.")
        out.append(names.index(other))
    return np.asarray(out, np.int64)


@functools.lru_cache(maxsize=2)
def _exp_mirror(n_exp: int) -> np.ndarray:
    from methods.facemodel.ict import load_ict

    names = tuple(load_ict("narrow").exp_names)
    if len(names) != n_exp:
        raise ValueError(f"expression targets have {n_exp} weights, ICT has {len(names)}.")
    return expression_mirror(names)


def similarity_directions(points: np.ndarray) -> np.ndarray:
    """(3N, 7) first-order displacements of a similarity transform of ``points`` (N, 3).

    Columns: uniform scale about the centroid, translation along x, y, z, rotation about
    x, y, z (``w x (p - centroid)``); flattened like ``points.ravel()``.
    """
    p = np.asarray(points, np.float64)
    c = p - p.mean(0)
    cols = [c.ravel()]
    for k in range(3):
        t = np.zeros_like(p)
        t[:, k] = 1.0
        cols.append(t.ravel())
    for k in range(3):
        w = np.zeros(3)
        w[k] = 1.0
        cols.append(np.cross(w, c).ravel())
    return np.stack(cols, 1)


# ------------------------------------------------------------------------------ building


def data_key(cfg: TrainConfig, crop_distance: float) -> str:
    """Cache key of the prepared data for a config."""
    from benchmark.provenance import file_sha256
    from methods.elam.config import resolve_weights

    parts: dict[str, Any] = {k: getattr(cfg, k) for k in ("sources", "synthetic_n",
                                                          "real_pool_seed", "input_size",
                                                          "landmarks", "dev_fraction",
                                                          "align_rotation", "n_id")}
    parts["crop_distance"] = crop_distance
    parts["version"] = DATA_VERSION
    parts["detector"] = file_sha256(resolve_weights(None))[:16]
    parts["folders"] = [_folder_signature(f) for f in cfg.folders]
    if SYNTHETIC_SOURCE in cfg.sources:
        from benchmark.datasets.synthetic import SyntheticDataset

        parts["synthetic"] = SyntheticDataset(split="train", n=1).store.key
    if REAL_SOURCE in cfg.sources:
        from benchmark.datasets.real_faces import default_root

        root = Path(cfg.real_faces).expanduser() if cfg.real_faces else default_root()
        parts["real"] = str(root.resolve()) if root else None
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_data(cfg: TrainConfig, crop_distance: float, progress: bool = True,
                 cache: bool = True) -> TrainingData:
    """The prepared training data of a config (built once, then read from the cache).

    Args:
        cfg: the training config (sources, sizes, landmark provider, dev fraction).
        crop_distance: the alignment template distance (:class:`NetSpec.crop_distance`).
        progress: show a progress bar while building.
        cache: read/write the on-disk cache.

    Returns:
        The :class:`TrainingData`.

    Raises:
        ValueError: a source is unavailable or no photo had a detectable face.
    """
    from methods.landmarks.cache import cache_root

    key = data_key(cfg, crop_distance)
    path = cache_root() / "elam_ldl" / "data" / f"{key}.npz"
    if cache and path.is_file():
        try:
            return _read(path, key)
        except Exception as exc:  # damaged cache: rebuild
            logger.warning("prepared data %s unreadable (%s); rebuilding", path, exc)
    data = _build(cfg, crop_distance, key, progress)
    if cache:
        _write(path, data)
    return data


def _build(cfg: TrainConfig, crop_distance: float, key: str, progress: bool) -> TrainingData:
    from tqdm.auto import tqdm

    from methods.elam.eye_crops import cut_eye_crops
    from methods.elam.eye_detector import EyeStateDetector
    from methods.elam_ldl.align import fit_similarity, five_points, template_points, warp_image
    from methods.landmarks import LandmarkResult, as_image, get_provider

    photos: list[_Photo] = []
    if SYNTHETIC_SOURCE in cfg.sources:
        photos += _synthetic_photos(cfg)
    if REAL_SOURCE in cfg.sources:
        photos += _real_photos(cfg)
    for folder in cfg.folders:
        photos += _folder_photos(folder)
    provider = get_provider("dlib") if cfg.landmarks == "dlib" else None
    detector = EyeStateDetector()
    size = cfg.input_size
    tpl = template_points(size, crop_distance)
    rows: dict[str, list[Any]] = {k: [] for k in ("images", "valid", "landmarks", "p_closed",
                                                  "source", "dev", "eye_label", "ids",
                                                  "shape_target", "eye_crops",
                                                  "exp_target")}
    shape_basis = ShapeBasis(cfg.n_id)
    no_shape = np.full(cfg.n_id, np.nan, np.float32)
    no_exp = np.full(shape_basis.n_exp, np.nan, np.float32)
    counts: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    for ph in tqdm(photos, desc="preparing ELAM+LDL training data", disable=not progress,
                   unit="img", dynamic_ncols=True):
        c = counts.setdefault(ph.source, {"photos": 0, "no_face": 0, "error": 0, "kept": 0})
        c["photos"] += 1
        try:
            image = as_image(ph.load())
        except Exception as exc:
            logger.debug("cannot read %s: %s", ph.id, exc)
            c["error"] += 1
            continue
        if provider is None:  # ``gt``: the dataset's own landmarks (tests and diagnosis only)
            res = (LandmarkResult("ok", landmarks=np.asarray(ph.gt_landmarks, np.float32))
                   if ph.gt_landmarks is not None else LandmarkResult.failed("no_face", "none"))
        else:
            res = provider.detect(image)
        if not res.ok:
            c["no_face" if res.status == "no_face" else "error"] += 1
            continue
        try:
            tr = fit_similarity(five_points(res.landmarks), tpl, cfg.align_rotation)
        except ValueError:
            c["error"] += 1
            continue
        crop, valid = warp_image(image, tr, size)
        eyes = cut_eye_crops(image, res.landmarks, detector.crop_size, detector.enlarge)
        p = detector.predict_crops(eyes)
        dev = in_dev(f"{ph.source}:{ph.group}", cfg.dev_fraction) if ph.source != "folder" \
            else False
        rows["images"].append(crop)
        rows["valid"].append(valid)
        rows["landmarks"].append(tr.apply(res.landmarks))
        rows["p_closed"].append(np.asarray(p, np.float32))
        rows["eye_crops"].append(eyes.astype(np.float16))
        rows["source"].append(SOURCE_CODES[ph.source])
        rows["dev"].append(dev)
        rows["eye_label"].append(ph.eye_label if dev else (-1, -1))
        rows["ids"].append(f"{ph.source}:{ph.id}")
        rows["shape_target"].append(shape_basis.project(ph.neutral) if ph.neutral is not None
                                    else no_shape)
        rows["exp_target"].append(np.asarray(ph.expression, np.float32)
                                  if ph.expression is not None else no_exp)
        c["kept"] += 1
    if not rows["images"]:
        raise ValueError(f"no training photo had a detectable face ({counts}).")
    logger.info("prepared %d crops in %.0f s: %s", len(rows["images"]),
                time.perf_counter() - t0, counts)
    return TrainingData(
        images=np.stack(rows["images"]), valid=np.stack(rows["valid"]),
        landmarks=np.stack(rows["landmarks"]).astype(np.float32),
        p_closed=np.stack(rows["p_closed"]).astype(np.float32),
        source=np.asarray(rows["source"], np.int8), dev=np.asarray(rows["dev"], bool),
        eye_label=np.asarray(rows["eye_label"], np.int8), ids=np.asarray(rows["ids"]),
        counts=counts, key=key,
        shape_target=np.stack(rows["shape_target"]).astype(np.float32),
        eye_crops=np.stack(rows["eye_crops"]),
        exp_target=np.stack(rows["exp_target"]).astype(np.float32),
    )


def _write(path: Path, data: TrainingData) -> None:
    arrays = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)
              if f.name not in ("counts", "key") and getattr(data, f.name) is not None}
    arrays["counts"] = np.array(json.dumps(data.counts))
    arrays["key"] = np.array(data.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            fh.write(buf.getvalue())
        from benchmark.cache import file_mode

        os.chmod(tmp, file_mode())  # the user's umask, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, key: str) -> TrainingData:
    with np.load(path, allow_pickle=False) as d:
        if str(d["key"]) != key:
            raise ValueError("key mismatch")
        kw = {f.name: d[f.name] for f in dataclasses.fields(TrainingData)
              if f.name not in ("counts", "key") and f.name in d.files}
        return TrainingData(**kw, counts=json.loads(str(d["counts"])), key=key)


# ------------------------------------------------------------------------------ batches


@dataclasses.dataclass
class Batch:
    """One training batch (torch).

    Attributes:
        images: (B, 3, S, S) float in [0, 1].
        valid: (B, S, S) float 0/1 crop pixels inside the photo.
        landmarks: (B, 68, 2) detected landmarks, crop pixels.
        p_closed: (B, 2) detector P(closed).
        index: (B,) rows of the :class:`TrainingData`.
        shape_target: (B, n_id) identity targets (NaN rows: none), or None.
        eye_crops: (B, 2, s, s) float canonical eye crops in [0, 1], or None.
        exp_target: (B, 53) expression weights (NaN rows: none; mirrored on flipped rows),
            or None.
    """

    images: Any
    valid: Any
    landmarks: Any
    p_closed: Any
    index: np.ndarray
    shape_target: Any = None
    eye_crops: Any = None
    exp_target: Any = None

    def to(self, device: str) -> Batch:
        """The batch on ``device``."""
        def move(t: Any) -> Any:
            return t.to(device) if t is not None else None

        return Batch(self.images.to(device), self.valid.to(device), self.landmarks.to(device),
                     self.p_closed.to(device), self.index, move(self.shape_target),
                     move(self.eye_crops), move(self.exp_target))


def batch_indices(train_index: np.ndarray, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of step ``step``: epochs are seeded permutations, so any step is reproducible."""
    import torch

    n = len(train_index)
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, pos = divmod(start + len(out), n)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).numpy()
        take = min(batch_size - len(out), n - pos)
        out.extend(perm[pos: pos + take].tolist())
    return train_index[np.asarray(out, np.int64)]


def make_batch(data: TrainingData, index: np.ndarray, images: np.ndarray | None = None,
               landmarks: np.ndarray | None = None, p_closed: np.ndarray | None = None) -> Batch:
    """The rows ``index`` as a torch :class:`Batch` (no augmentation).

    ``images`` / ``landmarks`` / ``p_closed`` replace the stored rows when given (the
    counterfactual batches of :mod:`methods.elam_ldl.counterfactual`).
    """
    import torch

    images = data.images[index] if images is None else images
    landmarks = data.landmarks[index] if landmarks is None else landmarks
    p_closed = data.p_closed[index] if p_closed is None else p_closed
    st = (torch.from_numpy(data.shape_target[index]) if data.shape_target is not None
          else None)
    ec = (torch.from_numpy(data.eye_crops[index].astype(np.float32))
          if data.eye_crops is not None else None)
    et = torch.from_numpy(data.exp_target[index]) if data.exp_target is not None else None
    return Batch(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
                 / 255.0, torch.from_numpy(data.valid[index]).float(),
                 torch.from_numpy(np.asarray(landmarks, np.float32)),
                 torch.from_numpy(np.asarray(p_closed, np.float32)), np.asarray(index), st, ec,
                 et)


def augment_batch(batch: Batch, cfg: TrainConfig, seed: int) -> Batch:
    """Random scale, rotation, shift, flip and colour gain (Deep3D-style), seeded.

    The map from input to output crop pixels is ``out = s R (flip(in) - c) + c + d`` with
    ``c`` the crop centre; images and masks are resampled (bilinear), landmarks mapped and,
    on flips, re-indexed with :data:`FLIP_68` (P(closed) and the canonical eye crops swap
    eyes: a mirrored face's canonical crops are the original ones in the other order;
    expression targets follow :func:`expression_mirror`). The identity target is left as it
    is on flips: ICT's identity modes are close to symmetric, and a mirrored mesh's
    coefficients would need a vertex correspondence the model does not ship.
    """
    import torch
    import torch.nn.functional as F

    b, _, s, _ = batch.images.shape
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g)

    scale = u(1.0 - cfg.aug_scale, 1.0 + cfg.aug_scale)
    theta = u(-cfg.aug_rot_deg, cfg.aug_rot_deg) * (math.pi / 180.0)
    shift = torch.stack([u(-cfg.aug_shift, cfg.aug_shift), u(-cfg.aug_shift, cfg.aug_shift)], 1)
    flip = (torch.rand(b, generator=g) < 0.5) if cfg.aug_flip else torch.zeros(b, dtype=bool)
    gain = torch.stack([u(1.0 - cfg.aug_colour, 1.0 + cfg.aug_colour) for _ in range(3)], 1)
    cos, sin = theta.cos(), theta.sin()
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B,2,2)
    fl = torch.ones(b, 2)
    fl[flip, 0] = -1.0
    # normalised coordinates (x_n = 2 x / S - 1): out_n = s R (fl * in_n) + 2 d
    # => in_n = fl * (R^T (out_n - 2 d) / s)
    inv = rot.transpose(1, 2) / scale[:, None, None]
    inv = inv * fl[:, :, None]
    off = -(inv @ (2.0 * shift)[:, :, None])
    grid = F.affine_grid(torch.cat([inv, off], 2), (b, 4, s, s), align_corners=False)
    stacked = torch.cat([batch.images, batch.valid[:, None]], 1)
    warped = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    images = (warped[:, :3] * gain[:, :, None, None]).clamp(0.0, 1.0)
    valid = (warped[:, 3] > 0.5).float()
    lm = batch.landmarks.clone()
    p = batch.p_closed.clone()
    eyes = batch.eye_crops.clone() if batch.eye_crops is not None else None
    et = batch.exp_target.clone() if batch.exp_target is not None else None
    if flip.any():
        flipped = lm[flip][:, torch.from_numpy(FLIP_68)]
        flipped[..., 0] = s - flipped[..., 0]
        lm[flip] = flipped
        p[flip] = p[flip][:, [1, 0]]
        if eyes is not None:
            eyes[flip] = eyes[flip][:, [1, 0]]
        if et is not None:
            et[flip] = et[flip][:, torch.from_numpy(_exp_mirror(et.shape[1]))]
    c = s / 2.0
    lm = torch.einsum("bij,bkj->bki", rot * scale[:, None, None], lm - c) + c \
        + shift[:, None, :] * s
    return Batch(images, valid, lm, p, batch.index, batch.shape_target, eyes, et)
