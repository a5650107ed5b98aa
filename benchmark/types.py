"""The two records that cross package boundaries: a face sample and a prediction.

Room: shared vocabulary of the suite. Datasets (``benchmark.datasets``) produce
:class:`FaceSample`; methods (``methods``) turn one into a :class:`Prediction`; the runner
scores the pair with ``metrics``. This module imports nothing from the rest of the project.

Conventions (see ``docs/footguns.md``):

* Geometry is float32 **metres**; faces are int64, 0-based.
* 2D landmarks are (68, 2) float32 **pixels** of the sample's image, x right, y down,
  iBUG 68-point order, 0-based.
* Eyes are indexed by landmark block: eye 0 = landmarks 36-41 (the subject's right eye, on
  the image's left in a frontal photo), eye 1 = landmarks 42-47 (the subject's left eye).
* Eye labels are ints: 0 open, 1 closed, -1 unknown or excluded (e.g. half-closed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

EYE_OPEN = 0
EYE_CLOSED = 1
EYE_UNKNOWN = -1

#: Per-eye names in eye-index order (subject's right, subject's left).
EYE_NAMES = ("right", "left")

SampleStatus = Literal["ok", "no_face", "error", "skipped"]

#: iBUG-68 indices of the eyelid pairs (upper, lower) and eye corners, per eye.
EYELID_UPPER = ((37, 38), (43, 44))
EYELID_LOWER = ((41, 40), (47, 46))
EYE_CORNERS = ((36, 39), (42, 45))
#: iBUG-68 indices of the 7 NoW landmarks, in NoW order.
NOW7_FROM_68 = (36, 39, 42, 45, 33, 48, 54)


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """A mesh topology: triangles plus where the 68 landmarks sit on it.

    Landmarks are either vertex ids (``landmark_vertex_ids``, ICT/BFM) or barycentric points
    on triangles (``landmark_faces`` + ``landmark_bary``, FLAME's embedding), or absent (a
    mesh imported with only its 7 NoW points: eye metrics then do not apply). Eye openness
    and the NoW 7 points are read through :meth:`landmarks`, so every topology is measured
    on the same 68-point definition.

    Attributes:
        name: short id, e.g. ``ict-face`` or ``bfm-front``.
        faces: (F, 3) int64 triangles, 0-based.
        landmark_vertex_ids: (68,) int64 vertex ids, or None.
        landmark_faces: (68,) int64 triangle ids, or None.
        landmark_bary: (68, 3) float32 barycentric weights, or None.
        regions: optional named boolean vertex masks (``face``, ``eyes``, ``lips`` ...).
    """

    name: str
    faces: np.ndarray
    landmark_vertex_ids: np.ndarray | None = None
    landmark_faces: np.ndarray | None = None
    landmark_bary: np.ndarray | None = None
    regions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.landmark_faces is None) != (self.landmark_bary is None):
            raise ValueError(
                f"topology {self.name!r} needs landmark_faces and landmark_bary together."
            )

    @property
    def has_landmarks(self) -> bool:
        """Whether the 68 landmarks are placed on this topology."""
        return self.landmark_vertex_ids is not None or self.landmark_faces is not None

    @property
    def n_vertices_min(self) -> int:
        """Smallest vertex count these faces can index."""
        return int(self.faces.max()) + 1

    def landmarks(self, vertices: np.ndarray) -> np.ndarray:
        """The (68, 3) landmark points of a mesh with this topology."""
        if not self.has_landmarks:
            raise ValueError(f"topology {self.name!r} places no 68 landmarks.")
        if self.landmark_vertex_ids is not None:
            return vertices[self.landmark_vertex_ids]
        tri = vertices[self.faces[self.landmark_faces]]  # (68, 3, 3)
        return np.einsum("lk,lkd->ld", self.landmark_bary, tri).astype(vertices.dtype)

    def digest(self) -> str:
        """A short content hash (faces + landmark definition), for cache keys."""
        import hashlib

        h = hashlib.sha256(self.name.encode())
        for arr in (self.faces, self.landmark_vertex_ids, self.landmark_faces, self.landmark_bary):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


@dataclasses.dataclass
class Scan:
    """A reference 3D surface for scan-to-mesh error (NoW protocol).

    Attributes:
        points: (N, 3) float32 scan vertices in metres (only vertices are scored).
        landmarks7: (7, 3) float32 scan landmarks in metres, NoW order: outer/inner eye corner
            of the subject's right eye, inner/outer corner of the left eye (68-ids 36, 39, 42,
            45), nose bottom (33), mouth corners (48, 54).
        faces: optional (M, 3) int64 triangles of the scan (unused by the metric).
        cropped: whether ``points`` are already cropped with the NoW sphere.
    """

    points: np.ndarray
    landmarks7: np.ndarray
    faces: np.ndarray | None = None
    cropped: bool = False


@dataclasses.dataclass
class FaceSample:
    """One evaluation (or training) sample.

    Attributes:
        id: unique id within its dataset split (file-name safe).
        subject: subject id; bootstrap confidence intervals resample subjects.
        image: (H, W, 3) uint8 RGB image, or a zero-argument callable returning it (lazy
            loading of large datasets).
        landmarks2d: (68, 2) float32 pixel landmarks that come *with the dataset* (ground
            truth on synthetic data, annotations on real data), or None.
        eye_state: (2,) int8 per-eye label (``EYE_OPEN``/``EYE_CLOSED``/``EYE_UNKNOWN``).
        eye_openness: (2,) float32 ground-truth openness (eyelid gap / eye width, the same
            definition as ``metrics.eyes.eye_openness``) or NaN where unknown.
        image_state: image-level label (``EYE_CLOSED`` when both eyes are closed) or
            ``EYE_UNKNOWN``; real datasets labelled per image set this and ``eye_state``.
        scan: reference surface for scan-to-mesh error, or None.
        gt_vertices: ground-truth mesh vertices (V, 3) in metres (synthetic data only).
        gt_topology: name of the ground-truth mesh topology (synthetic data only).
        meta: free-form extras (eye-state category names, pose, generation parameters);
            ``meta["load_error"]`` marks a sample its loader could not fully build (the runner
            records it as an ``error`` row, see ``benchmark.datasets.base``).
    """

    id: str
    subject: str
    image: np.ndarray | Callable[[], np.ndarray]
    landmarks2d: np.ndarray | None = None
    eye_state: np.ndarray = dataclasses.field(
        default_factory=lambda: np.full(2, EYE_UNKNOWN, np.int8)
    )
    eye_openness: np.ndarray = dataclasses.field(
        default_factory=lambda: np.full(2, np.nan, np.float32)
    )
    image_state: int = EYE_UNKNOWN
    scan: Scan | None = None
    gt_vertices: np.ndarray | None = None
    gt_topology: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """Returns the RGB image as (H, W, 3) uint8, loading it if it is lazy."""
        img = self.image() if callable(self.image) else self.image
        return img


@dataclasses.dataclass
class Prediction:
    """What a method returns for one sample.

    Attributes:
        status: ``ok``; ``no_face`` when the method's own detector found no face; ``error``
            when it raised (``error`` holds the message).
        vertices: (V, 3) float32 reconstructed mesh in metres, any rigid frame (metrics align
            it), or None when ``status != "ok"``.
        topology: the mesh :class:`Topology` (usually shared by all predictions of a method).
        landmarks7: optional (7, 3) float32 NoW landmarks in the mesh's frame, metres; when
            absent they are read from the topology's 68 landmarks.
        landmarks2d: optional (68, 2) float32 projection of the mesh's landmarks into the
            *input image* in pixels, for 2D NME.
        vertices_image: optional (V, 3) float32 vertices projected into the input image:
            x, y in pixels and camera depth (larger = farther), for overlays.
        eye_prob_closed: optional (2,) float32, the method's own eye-state belief in eye-index
            order (ELAM's detector output, MediaPipe's eyeBlink blendshapes): a second
            eye-state readout reported beside the mesh's; the headline eye metrics use the mesh.
        neutral_vertices: optional (V, 3) float32 mesh of the same identity with expression
            (and jaw) zeroed, same topology and frame conventions as ``vertices``; scored
            against scans of datasets whose scans are neutral (NoW, REALY).
        error: error text when ``status == "error"``.
        extras: small JSON-able extras (timings, fitted coefficients' norms).
    """

    status: SampleStatus
    vertices: np.ndarray | None = None
    topology: Topology | None = None
    landmarks7: np.ndarray | None = None
    landmarks2d: np.ndarray | None = None
    vertices_image: np.ndarray | None = None
    eye_prob_closed: np.ndarray | None = None
    neutral_vertices: np.ndarray | None = None
    error: str | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def failed(cls, status: SampleStatus, error: str) -> Prediction:
        """A prediction that carries only a failure status and its reason."""
        return cls(status=status, error=error)


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether a method or dataset can run here, and if not, why and how to fix it.

    Attributes:
        ok: True when everything it needs is present.
        reason: one line, empty when ``ok``.
        fix: the command or setting that makes it available, empty when ``ok``.
    """

    ok: bool
    reason: str = ""
    fix: str = ""

    def __str__(self) -> str:
        if self.ok:
            return "available"
        return f"skipped: {self.reason}" + (f" (fix: {self.fix})" if self.fix else "")
