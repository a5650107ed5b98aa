"""``mediapipe``: MediaPipe Face Landmarker (Tasks API) with a metric mesh and its blendshapes.

Room: the adapter. It runs Google's Face Landmarker through the PyPI package ``mediapipe``
(``mediapipe.tasks.python.vision.FaceLandmarker``, IMAGE mode, one face) on the
``face_landmarker.task`` bundle a user supplies, and turns its output into the suite's
prediction:

1. **Landmarks.** The landmarker returns 478 points (the 468 vertices of MediaPipe's
   canonical face mesh, then 10 iris points) as normalised image coordinates: x, y in
   [0, 1] of the image width and height, z a relative depth in the scale of x.
2. **Metric mesh.** MediaPipe's face-geometry pipeline (``geometry_pipeline.cc``, whose
   output ``FaceGeometry.mesh`` the Tasks API does not expose) is re-computed in numpy: the
   points are placed on the near plane of a perspective camera (vertical field of view 63°,
   near plane 1, origin top-left, as the Face Landmarker graph configures it), a weighted
   similarity (Procrustes, 33 weighted landmarks) onto the canonical metric face gives a
   scale, the points are unprojected with that scale twice, and the final similarity is the
   facial transformation matrix (checked against the Tasks API's own matrix on real runs:
   equal to float precision). The per-landmark deformation is kept: the mesh is the 468
   unprojected points mapped by the inverse of that matrix into the canonical face's frame,
   whose unit is centimetres, then converted to metres. Depth and absolute size are those of
   the canonical face (a single photo fixes neither), exactly as MediaPipe's own metric
   landmarks.
3. **Topology.** The triangles are those of the canonical mesh in the bundle's geometry
   metadata (898 triangles; eyes and mouth are closed by triangles), shipped in
   ``methods/facemodel/assets/mediapipe/`` with their Apache-2.0 licence; the 68 iBUG
   points are placed on it by :data:`IBUG68_VERTICES` (measured on the synthetic train
   split, see that table's comment).
4. **Eye state.** The bundle's blendshape model scores the 52 ARKit blendshapes;
   ``eyeBlinkRight`` / ``eyeBlinkLeft`` name the subject's own right / left eye (checked on
   synthetic winks), so ``eye_prob_closed = (eyeBlinkRight, eyeBlinkLeft)`` in eye-index
   order. All 52 scores are kept in ``extras["blendshapes"]``.

With ``num_faces=1`` MediaPipe keeps the face its detector scores highest (its face
detector graph clips the score-ordered detections left by non-maximum suppression to the
first ``num_faces``); the benchmark's images hold one face. The landmarker runs on the CPU
through TFLite/XNNPACK and returns the same numbers for the same image.

File: ``face_landmarker.task`` (``MEDIAPIPE_FACE_LANDMARKER`` or
``--method-option mediapipe.model=PATH``); package: ``pip install -e '.[mediapipe]'``.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import struct
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.types import FaceSample, Prediction, Topology
from methods.base import Method, MethodCard, RequiredFile
from methods.topology import register_topology

#: Vertices of MediaPipe's canonical face mesh (the 10 iris points 468-477 are not on it).
N_MESH = 468
#: Centimetres (MediaPipe's canonical face) to metres (this project).
CM_TO_M = 0.01
#: Perspective camera of the Face Landmarker graph's face-geometry environment.
VERTICAL_FOV_DEG = 63.0
NEAR = 1.0
#: Entry of the bundle that holds the canonical mesh and the Procrustes weights.
GEOMETRY_ENTRY = "geometry_pipeline_metadata_landmarks.binarypb"
#: The shipped canonical mesh (triangles, canonical vertices in cm, Procrustes weights).
ASSET = Path(__file__).resolve().parent / "facemodel" / "assets" / "mediapipe" / \
    "canonical_face_mesh.npz"
TOPOLOGY = "mediapipe-canonical"

CARD = MethodCard(
    name="mediapipe",
    description="MediaPipe Face Landmarker (Tasks API): 468-vertex metric mesh + blendshapes",
    topology=TOPOLOGY,
    license="Apache-2.0 (MediaPipe code and the Face Landmarker models)",
    reference="https://ai.google.dev/edge/mediapipe/solutions/vision/face_landmarker",
    citation="Kartynnik, Ablavatski, Grishchenko, Grundmann. Real-time Facial Surface "
             "Geometry from Monocular Video on Mobile GPUs. CVPR Workshops 2019; "
             "Grishchenko, Ablavatski, Kartynnik, Raveendran, Grundmann. Attention Mesh: "
             "High-fidelity Face Mesh Prediction in Real-time. CVPR Workshops 2020",
    # As Google publishes it: the bundle's three models (BlazeFace short range, Face Mesh V2,
    # Blendshape V2) each have a model card (e.g. storage.googleapis.com/mediapipe-assets/
    # Model%20Card%20Blendshape%20V2.pdf) describing Google's own training data; the cards
    # could not be read from this machine, so no dataset is named here.
    training_datasets=("Google's own face data (MediaPipe model cards)",),
    required_files=(
        RequiredFile("model", "MEDIAPIPE_FACE_LANDMARKER",
                     "MediaPipe's face_landmarker.task bundle (Google's Face Landmarker "
                     "model page, Apache-2.0)"),
    ),
    extra="mediapipe",
    python_modules=("mediapipe",),
)


# ----------------------------------------------------------------------------------------
# The bundle's geometry metadata (a small protobuf read without the protobuf package)
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CanonicalFace:
    """MediaPipe's canonical face mesh and the landmark weights of its Procrustes fit.

    Attributes:
        vertices: (468, 3) float64 canonical vertices in centimetres (+x the subject's left,
            +y up, +z towards the viewer).
        faces: (898, 3) int64 triangles.
        weight_ids: (K,) int64 landmark ids with a non-zero Procrustes weight.
        weights: (K,) float64 their weights.
    """

    vertices: np.ndarray
    faces: np.ndarray
    weight_ids: np.ndarray
    weights: np.ndarray

    def weight_vector(self) -> np.ndarray:
        """(468,) weights, zero for landmarks outside the Procrustes basis."""
        w = np.zeros(len(self.vertices))
        w[self.weight_ids] = self.weights
        return w


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs of one protobuf message; packed fields stay bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = struct.unpack_from("<f", buf, i)[0], i + 4
        elif wire == 1:
            value, i = struct.unpack_from("<d", buf, i)[0], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _repeated(values: list[Any], kind: str) -> list[Any]:
    """A repeated scalar field, whether it was written packed (bytes) or one by one."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, bytes):
            if kind == "float":
                out.extend(struct.unpack(f"<{len(v) // 4}f", v))
            else:
                i = 0
                while i < len(v):
                    x, i = _varint(v, i)
                    out.append(x)
        else:
            out.append(v)
    return out


def parse_geometry_metadata(buf: bytes) -> CanonicalFace:
    """Reads MediaPipe's ``GeometryPipelineMetadata`` (binary protobuf).

    Fields (``face_geometry/protos``): 1 ``canonical_mesh`` (``Mesh3d``: 1 vertex type,
    2 primitive type, 3 ``vertex_buffer`` floats x, y, z, u, v per vertex, 4
    ``index_buffer`` triangle ids), 2 ``procrustes_landmark_basis`` (1 landmark id, 2
    weight), 3 ``input_source``.

    Raises:
        ValueError: not that message, or not a triangle mesh with 5 floats per vertex.
    """
    top = _fields(buf)
    meshes = [v for n, v in top if n == 1 and isinstance(v, bytes)]
    if len(meshes) != 1:
        raise ValueError("no canonical_mesh in the geometry metadata")
    mesh = _fields(meshes[0])
    vb = np.asarray(_repeated([v for n, v in mesh if n == 3], "float"), np.float64)
    ib = np.asarray(_repeated([v for n, v in mesh if n == 4], "int"), np.int64)
    if vb.size == 0 or vb.size % 5 or ib.size == 0 or ib.size % 3:
        raise ValueError(f"unexpected canonical mesh buffers ({vb.size} floats, {ib.size} ids)")
    verts = vb.reshape(-1, 5)[:, :3]
    ids, weights = [], []
    for n, v in top:
        if n == 2 and isinstance(v, bytes):
            ref = dict(_fields(v))
            ids.append(int(ref.get(1, 0)))
            weights.append(float(ref.get(2, 0.0)))
    if not ids or max(ids) >= len(verts) or ib.max() >= len(verts):
        raise ValueError("geometry metadata indices out of range")
    return CanonicalFace(verts, ib.reshape(-1, 3), np.asarray(ids, np.int64),
                         np.asarray(weights, np.float64))


def read_bundle_geometry(bundle: str | Path) -> CanonicalFace:
    """The canonical face stored in a ``face_landmarker.task`` bundle (a zip).

    Raises:
        ValueError: not a zip, or no readable geometry metadata in it.
    """
    try:
        with zipfile.ZipFile(bundle) as z:
            buf = z.read(GEOMETRY_ENTRY)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"{str(bundle)!r} is not a Face Landmarker bundle with "
                         f"{GEOMETRY_ENTRY}: {exc}") from exc
    return parse_geometry_metadata(buf)


@functools.lru_cache(maxsize=1)
def shipped_canonical_face() -> CanonicalFace:
    """The canonical face shipped in ``methods/facemodel/assets/mediapipe/``."""
    with np.load(ASSET) as d:
        return CanonicalFace(d["vertices"].astype(np.float64), d["faces"].astype(np.int64),
                             d["weight_ids"].astype(np.int64), d["weights"].astype(np.float64))


def write_asset(bundle: str | Path, path: str | Path = ASSET) -> Path:
    """Writes the shipped asset from a bundle's geometry metadata (how it was made)."""
    face = read_bundle_geometry(bundle)
    np.savez_compressed(path, vertices=face.vertices.astype(np.float32),
                        faces=face.faces.astype(np.int32),
                        weight_ids=face.weight_ids.astype(np.int32),
                        weights=face.weights.astype(np.float32))
    return Path(path)


# ----------------------------------------------------------------------------------------
# Screen landmarks -> metric mesh (MediaPipe's face-geometry pipeline, re-computed)
# ----------------------------------------------------------------------------------------


def weighted_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The 4 x 4 similarity ``T`` minimising ``sum_i w_i |T src_i - dst_i|^2`` (no reflection).

    Args:
        src: (N, 3) source points.
        dst: (N, 3) target points.
        weights: (N,) non-negative weights (normalised here).

    Raises:
        ValueError: zero total weight, or a degenerate (collinear) weighted source.
    """
    w = np.asarray(weights, np.float64)
    if w.sum() <= 1e-12:
        raise ValueError("the Procrustes weights sum to zero")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    cs, cd = src - mu_s, dst - mu_d
    cov = (cd * w[:, None]).T @ cs  # sum_i w_i d_i s_i^T
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    var = float(w @ (cs * cs).sum(axis=1))
    scale = float((sig * d).sum()) / var if var > 1e-12 else 0.0
    if scale <= 1e-12:
        raise ValueError("degenerate landmarks: the Procrustes scale is not positive")
    out = np.eye(4)
    out[:3, :3] = scale * rot
    out[:3, 3] = mu_d - scale * rot @ mu_s
    return out


def _apply(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ mat[:3, :3].T + mat[:3, 3]


def screen_to_metric(landmarks: np.ndarray, width: int, height: int, face: CanonicalFace,
                     vertical_fov_deg: float = VERTICAL_FOV_DEG, near: float = NEAR
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's screen-to-metric conversion of one face's normalised landmarks.

    Args:
        landmarks: (>= 468, 3) normalised landmarks (x, y in [0, 1] of the image, origin top
            left, z relative depth in the unit of x); only the first 468 are used.
        width: image width in pixels.
        height: image height in pixels.
        face: the canonical face (vertices in cm and Procrustes weights).
        vertical_fov_deg: the virtual camera's vertical field of view.
        near: its near plane (unit of the canonical face).

    Returns:
        (canonical, runtime, pose): (468, 3) metric landmarks in the canonical face's frame
        (cm; MediaPipe's ``FaceGeometry.mesh`` vertices), the same in the camera frame
        (cm; right-handed, the camera at the origin looking along -z) and the 4 x 4 pose
        (canonical -> camera, MediaPipe's facial transformation matrix).
    """
    pts = np.asarray(landmarks, np.float64)[:N_MESH].copy()
    canon = face.vertices
    w = face.weight_vector()
    h_near = 2.0 * near * np.tan(0.5 * np.deg2rad(vertical_fov_deg))
    w_near = width * h_near / height
    left, bottom = -0.5 * w_near, -0.5 * h_near
    # project x, y onto the near plane (y flipped: the image origin is top left)
    pts[:, 1] = 1.0 - pts[:, 1]
    pts *= np.array([w_near, h_near, w_near])
    pts += np.array([left, bottom, 0.0])
    depth_offset = pts[:, 2].mean()

    def scale_of(p: np.ndarray) -> float:
        return float(np.linalg.norm(weighted_similarity(canon, p, w)[:3, 0]))

    def unproject(p: np.ndarray, scale: float) -> np.ndarray:
        q = p.copy()
        q[:, 2] = (q[:, 2] - depth_offset + near) / scale
        q[:, :2] *= q[:, 2:3] / near
        q[:, 2] *= -1.0  # screen space is left-handed, metric space right-handed
        return q

    first = pts.copy()
    first[:, 2] *= -1.0
    s1 = scale_of(first)
    s2 = scale_of(unproject(pts, s1))
    runtime = unproject(pts, s1 * s2)
    pose = weighted_similarity(canon, runtime, w)
    canonical = _apply(np.linalg.inv(pose), runtime)
    return canonical, runtime, pose


def metric_mesh_m(landmarks: np.ndarray, width: int, height: int, face: CanonicalFace
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`screen_to_metric` in metres: (canonical-frame mesh, camera-frame mesh, pose).

    The pose's translation is converted to metres too; its rotation-and-scale block is
    unit-free.
    """
    canonical, runtime, pose = screen_to_metric(landmarks, width, height, face)
    pose_m = pose.copy()
    pose_m[:3, 3] *= CM_TO_M
    return canonical * CM_TO_M, runtime * CM_TO_M, pose_m


# ----------------------------------------------------------------------------------------
# Topology: the canonical triangles and the 68 iBUG points on them
# ----------------------------------------------------------------------------------------

#: Canonical-mesh vertex of each iBUG-68 landmark (0-based iBUG order).
#:
#: Chosen per landmark as the vertex whose image position is nearest the ground-truth
#: landmark on average (NME, outer-eye-corner normalisation) over the 200 renders of the
#: synthetic ``train`` split (seed 0), never the ``test`` split the suite scores. The result
#: is mirror-symmetric (every pair of mirrored iBUG points got a mirrored MediaPipe pair,
#: e.g. jaw 162/389, brows 70/300, mouth corners 61/291) with two deliberate exceptions:
#:
#: * inner eye corners 39 and 42 use 133 and 362, the vertices where MediaPipe's own eye
#:   contours (``FACE_LANDMARKS_RIGHT_EYE`` / ``LEFT_EYE``) turn from the upper to the lower
#:   lid; the fit preferred their lower-lid neighbours 155 / 382 by 0.003 / 0.002 NME, which
#:   would put the canthus on the lower lid and shorten the eye width the openness divides by.
#: * nothing else was overridden. The eyelid points, which drive the eye metrics, are the
#:   fit's own choice and also what the eye needs: upper 37, 38 = 160, 158 and lower 41, 40 =
#:   144, 153 (43, 44 = 385, 387; 47, 46 = 380, 373 on the other eye). MediaPipe's lid
#:   contours run 33-246-161-160-159-158-157-173-133 (upper) and 33-7-163-144-145-153-154-
#:   155-133 (lower), so 160/144 and 158/153 are the 3rd and 5th of the seven inner points
#:   of each lid (about 1/3 and 2/3 of the eye width, where iBUG puts 37/41 and 38/40) and
#:   they face each other across the eye: a shut lid brings each pair together. Runner-up
#:   vertices were 0.0015-0.04 NME worse (37: 161; 38: 157; 40: 154; 41: 163). Their
#:   openness on open eyes (median 0.29-0.30 on the synthetic splits) matches the ICT
#:   definition the closed threshold was set on (0.32 on the ICT mean face).
IBUG68_VERTICES = np.array([
    162, 227, 137, 215, 138, 150, 149, 171, 152, 396, 378, 379, 367, 435, 366, 447, 389,  # jaw
    70, 63, 105, 66, 107,  # right brow (subject's)
    336, 296, 334, 293, 300,  # left brow
    168, 197, 195, 4,  # nose bridge
    240, 97, 2, 326, 460,  # nostrils
    33, 160, 158, 133, 153, 144,  # right eye: corners 33/133, upper 160 158, lower 153 144
    362, 385, 387, 263, 373, 380,  # left eye: corners 362/263, upper 385 387, lower 373 380
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lip
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lip
], dtype=np.int64)


def mediapipe_topology() -> Topology:
    """The canonical face mesh (898 triangles) with :data:`IBUG68_VERTICES`."""
    return Topology(name=TOPOLOGY, faces=shipped_canonical_face().faces,
                    landmark_vertex_ids=IBUG68_VERTICES.copy())


register_topology(TOPOLOGY, mediapipe_topology)


# ----------------------------------------------------------------------------------------
# Blendshapes -> per-eye closed probability
# ----------------------------------------------------------------------------------------

#: Blendshape of each eye, in eye-index order (eye 0 = the subject's right eye). ARKit and
#: MediaPipe name blendshapes after the subject's own side (checked on synthetic winks:
#: eyeBlinkLeft is the larger score on every left wink of both synthetic splits).
EYE_BLINK = ("eyeBlinkRight", "eyeBlinkLeft")


def eye_prob_closed(blendshapes: dict[str, float]) -> np.ndarray:
    """(2,) float32 closed probability per eye, eye-index order, from the blink scores.

    Raises:
        KeyError: a blink blendshape is missing (not a blendshape-enabled bundle).
    """
    return np.array([blendshapes[name] for name in EYE_BLINK], np.float32)


# ----------------------------------------------------------------------------------------
# The adapter
# ----------------------------------------------------------------------------------------


class MediaPipeFaceLandmarker(Method):
    """MediaPipe's Face Landmarker on a user's bundle: metric mesh, 2D landmarks, blinks."""

    card = CARD

    def load(self, device: str) -> None:
        """Creates the landmarker (CPU) and reads the bundle's canonical face.

        Raises:
            ValueError: the bundle's canonical mesh is not the shipped topology's.
        """
        from mediapipe.tasks.python import BaseOptions, vision

        bundle = self.resolve_file("model")
        self.face = read_bundle_geometry(bundle)
        shipped = shipped_canonical_face()
        if self.face.vertices.shape != shipped.vertices.shape or not np.array_equal(
                self.face.faces, shipped.faces):
            raise ValueError(f"{bundle}: its canonical mesh differs from the shipped "
                             f"{TOPOLOGY} topology ({len(self.face.vertices)} vertices, "
                             f"{len(self.face.faces)} triangles); is it a Face Landmarker "
                             "bundle?")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(bundle)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self.landmarker = vision.FaceLandmarker.create_from_options(options)
        # MediaPipe runs every C call through a thread pool that Python stops before atexit
        # handlers run, and its own __del__ fails once modules are torn down: close it while
        # thread pools still work (the hook concurrent.futures itself uses), else at exit.
        register = getattr(threading, "_register_atexit", atexit.register)
        register(self.landmarker.close)
        self.topology = get_mediapipe_topology()
        import mediapipe as mp

        self._mp = mp

    def detect(self, image: np.ndarray) -> Any:
        """The raw Tasks API result for one RGB uint8 image."""
        mp = self._mp
        img = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        return self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=img))

    def predict(self, sample: FaceSample) -> Prediction:
        """Landmarks -> metric mesh (metres) + 2D landmarks + blink probabilities."""
        image = sample.load_image()
        height, width = image.shape[:2]
        result = self.detect(image)
        if not result.face_landmarks:
            return Prediction.failed("no_face", "MediaPipe found no face")
        norm = np.array([[p.x, p.y, p.z] for p in result.face_landmarks[0]], np.float64)
        canonical, runtime, pose = metric_mesh_m(norm, width, height, self.face)
        blend = {c.category_name: float(c.score) for c in result.face_blendshapes[0]}
        matrix = np.asarray(result.facial_transformation_matrixes[0], np.float64)
        pixels = norm[:N_MESH, :2] * np.array([width, height])
        return Prediction(
            status="ok",
            vertices=canonical.astype(np.float32),
            topology=self.topology,
            landmarks2d=pixels[IBUG68_VERTICES].astype(np.float32),
            vertices_image=np.concatenate([pixels, -runtime[:, 2:3]], axis=1).astype(
                np.float32),
            eye_prob_closed=eye_prob_closed(blend),
            extras={
                "blendshapes": {k: round(v, 6) for k, v in blend.items()},
                # our re-computed pose vs the Tasks API's matrix (translation in cm)
                "pose_max_abs_diff": float(np.abs(pose[:3, :3] - matrix[:3, :3]).max()
                                           + np.abs(pose[:3, 3] / CM_TO_M
                                                    - matrix[:3, 3]).max()),
                "iris_px": np.round(norm[N_MESH:, :2] * [width, height], 2).tolist(),
            },
        )


def get_mediapipe_topology() -> Topology:
    """The registered (cached) ``mediapipe-canonical`` topology."""
    from methods.topology import get_topology

    return get_topology(TOPOLOGY)


if __name__ == "__main__":  # regenerate the shipped asset: python -m methods.mediapipe_landmarker
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m methods.mediapipe_landmarker PATH/face_landmarker.task")
    print(write_asset(sys.argv[1]))
