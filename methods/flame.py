"""FLAME (Li et al. 2017), the head model DECA and MICA output, read from a user's files.

Room: FLAME's data (template, shape/expression/pose bases, joints, skinning weights, the 68
landmark embedding) and a stateless, batched forward with linear blend skinning. Two
sources: the official ``generic_model.pkl`` + DECA's ``landmark_embedding.npy`` (read with
:mod:`methods.safe_pickle`, never plain pickle), or a state dict that carries FLAME's
buffers (MICA's checkpoint does: ``generator.v_template``, ``generator.shapedirs`` ...).

Frames and units: metres; +x the subject's left, +y up, +z out of the face (the suite's
model frame). Joints: 0 global, 1 neck, 2 jaw, 3-4 eyes; a pose is 5 axis-angle vectors.
The 68 landmarks are barycentric points (``full_lmk_faces_idx``/``full_lmk_bary_coords``):
the 3D 68 on the mesh. DECA's 2D keypoints (``decalib/models/FLAME.py: forward``'s
``landmarks2d``) are another set: the 51 static inner points (68-ids 17-67,
``static_lmk_*``) plus a jaw contour (0-16) picked from 79 yaw bins (``dynamic_lmk_*``) by
the head's yaw, so the contour follows the silhouette as the head turns
(:func:`dynamic_landmarks`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from benchmark.types import Topology
from methods.safe_pickle import as_array, load_restricted

N_SHAPE_TOTAL = 300  # FLAME's shapedirs: 300 identity components, then expressions


@dataclasses.dataclass(eq=False)
class FlameData:
    """FLAME arrays (metres).

    Attributes:
        v_template: (V, 3) template vertices.
        shapedirs: (V, 3, S) shape then expression directions (300 + E).
        posedirs: (P, 3V) pose-corrective directions (P = 9 x 4 joints).
        j_regressor: (J, V) joint regressor.
        parents: (J,) kinematic parents (-1 for the root).
        weights: (V, J) skinning weights.
        faces: (F, 3) triangles.
        lmk_faces: (68,) landmark triangle ids.
        lmk_bary: (68, 3) landmark barycentric weights.
        static_faces: optional (51,) triangle ids of DECA's static 2D points 17-67.
        static_bary: optional (51, 3) their barycentric weights.
        dynamic_faces: optional (79, 17) contour triangle ids per yaw bin.
        dynamic_bary: optional (79, 17, 3) their barycentric weights.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    parents: np.ndarray
    weights: np.ndarray
    faces: np.ndarray
    lmk_faces: np.ndarray
    lmk_bary: np.ndarray
    static_faces: np.ndarray | None = None
    static_bary: np.ndarray | None = None
    dynamic_faces: np.ndarray | None = None
    dynamic_bary: np.ndarray | None = None

    @property
    def has_contour(self) -> bool:
        """True when the static and dynamic 2D embeddings were read."""
        return self.static_faces is not None and self.dynamic_faces is not None

    def topology(self, name: str = "flame") -> Topology:
        """FLAME's topology with its barycentric 68 landmarks."""
        return Topology(name=name, faces=self.faces, landmark_faces=self.lmk_faces,
                        landmark_bary=self.lmk_bary)

    @classmethod
    def from_official(cls, model_path: str | Path, embedding_path: str | Path) -> FlameData:
        """Reads ``generic_model.pkl`` and ``landmark_embedding.npy`` (no plain pickle).

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: a field is missing or has the wrong shape.
        """
        model = load_restricted(model_path)
        emb = load_restricted(embedding_path)
        if not isinstance(model, dict) or not isinstance(emb, dict):
            raise ValueError(f"{model_path} / {embedding_path} do not hold FLAME dictionaries.")
        for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table",
                    "weights", "f"):
            if key not in model:
                raise ValueError(f"FLAME file {model_path} lacks the field {key!r}.")
        for key in ("full_lmk_faces_idx", "full_lmk_bary_coords"):
            if key not in emb:
                raise ValueError(f"landmark embedding {embedding_path} lacks {key!r}.")
        posedirs = as_array(model["posedirs"])
        data = cls(
            v_template=as_array(model["v_template"]),
            shapedirs=as_array(model["shapedirs"]),
            posedirs=posedirs.reshape(-1, posedirs.shape[-1]).T.copy(),
            j_regressor=as_array(model["J_regressor"]),
            parents=as_array(model["kintree_table"], np.int64)[0].copy(),
            weights=as_array(model["weights"]),
            faces=as_array(model["f"], np.int64),
            lmk_faces=as_array(emb["full_lmk_faces_idx"], np.int64).reshape(-1),
            lmk_bary=as_array(emb["full_lmk_bary_coords"]).reshape(-1, 3),
        )
        if all(k in emb for k in ("static_lmk_faces_idx", "static_lmk_bary_coords",
                                  "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")):
            data.static_faces = as_array(emb["static_lmk_faces_idx"], np.int64).reshape(-1)
            data.static_bary = as_array(emb["static_lmk_bary_coords"]).reshape(-1, 3)
            data.dynamic_faces = as_array(emb["dynamic_lmk_faces_idx"], np.int64)
            data.dynamic_bary = as_array(emb["dynamic_lmk_bary_coords"])
        data.parents[0] = -1
        data.check(str(model_path))
        return data

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str = "") -> FlameData:
        """FLAME buffers from a state dict (e.g. MICA's ``flameModel`` with ``generator.``)."""
        def get(name: str, dtype: type = np.float32) -> np.ndarray:
            key = prefix + name
            if key not in state:
                raise ValueError(f"the checkpoint has no FLAME buffer {key!r}.")
            return as_array(state[key], dtype)

        data = cls(
            v_template=get("v_template"),
            shapedirs=get("shapedirs"),
            posedirs=get("posedirs"),
            j_regressor=get("J_regressor"),
            parents=get("parents", np.int64),
            weights=get("lbs_weights"),
            faces=get("faces_tensor", np.int64),
            lmk_faces=get("full_lmk_faces_idx", np.int64).reshape(-1),
            lmk_bary=get("full_lmk_bary_coords").reshape(-1, 3),
        )
        data.check("checkpoint")
        return data

    def check(self, source: str) -> None:
        """Raises ``ValueError`` naming the first inconsistent array."""
        v = self.v_template.shape[0]
        j = self.j_regressor.shape[0]
        problems = {
            "v_template": self.v_template.shape != (v, 3),
            "shapedirs": self.shapedirs.shape[:2] != (v, 3),
            "posedirs": self.posedirs.shape != (9 * (j - 1), 3 * v),
            "J_regressor": self.j_regressor.shape != (j, v),
            "weights": self.weights.shape != (v, j),
            "faces": self.faces.ndim != 2 or self.faces.max() >= v,
            "landmarks": self.lmk_faces.shape != (68,) or self.lmk_bary.shape != (68, 3),
            "static/dynamic landmarks": self.has_contour and (
                self.static_faces.shape != (51,) or self.static_bary.shape != (51, 3)
                or self.dynamic_faces.ndim != 2 or self.dynamic_faces.shape[1] != 17
                or self.dynamic_bary.shape != (*self.dynamic_faces.shape, 3)),
        }
        bad = [k for k, is_bad in problems.items() if is_bad]
        if bad:
            raise ValueError(f"FLAME data from {source}: inconsistent field(s) {bad}.")


def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle vectors -> (N, 3, 3) rotation matrices."""
    angle = torch.linalg.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
    k = rot_vecs / angle
    cos, sin = torch.cos(angle)[:, :, None], torch.sin(angle)[:, :, None]
    zeros = torch.zeros_like(k[:, 0])
    kx, ky, kz = k[:, 0], k[:, 1], k[:, 2]
    kmat = torch.stack([zeros, -kz, ky, kz, zeros, -kx, -ky, kx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)[None]
    return eye + sin * kmat + (1 - cos) * kmat @ kmat


def contour_bin(global_pose: np.ndarray, neck_pose: np.ndarray | None = None) -> int:
    """DECA's yaw bin (0-78) for the jaw contour, from axis-angle global and neck poses.

    As ``decalib/models/FLAME.py: _find_dynamic_lmk_idx_and_bcoords``: the yaw of
    R_global R_neck in degrees, ``asin``-like ``atan2(-R[2,0], hypot(R[0,0], R[1,0]))``,
    clamped to at most 39 and rounded; negative yaws map to 39 - yaw (40-78), below -39 to 78.
    """
    pose = torch.as_tensor(np.stack([np.zeros(3) if neck_pose is None else neck_pose,
                                     global_pose]), dtype=torch.float32)
    rot = batch_rodrigues(pose)
    rel = rot[1] @ rot[0]
    sy = torch.sqrt(rel[0, 0] * rel[0, 0] + rel[1, 0] * rel[1, 0])
    yaw = torch.atan2(-rel[2, 0], sy) * 180.0 / np.pi
    deg = int(torch.round(torch.clamp(yaw, max=39)))
    if deg < 0:
        return 78 if deg < -39 else 39 - deg
    return deg


def dynamic_landmarks(data: FlameData, vertices: np.ndarray, global_pose: np.ndarray,
                      neck_pose: np.ndarray | None = None) -> np.ndarray:
    """DECA's 68 2D keypoints on a posed mesh: the yaw-binned contour + the 51 static points.

    Args:
        data: FLAME data read with its static/dynamic embeddings.
        vertices: (V, 3) posed vertices (global rotation applied).
        global_pose: (3,) the axis-angle global rotation that posed them.
        neck_pose: (3,) neck rotation (DECA: zero).

    Returns:
        (68, 3) points; project them with the method's camera.

    Raises:
        ValueError: the embedding file lacked the static/dynamic sets.
    """
    if not data.has_contour:
        raise ValueError("FLAME data has no static/dynamic landmark embedding.")
    b = contour_bin(np.asarray(global_pose, np.float64), neck_pose)
    faces = np.concatenate([data.dynamic_faces[b], data.static_faces])
    bary = np.concatenate([data.dynamic_bary[b], data.static_bary]).astype(np.float32)
    tri = np.asarray(vertices, np.float32)[data.faces[faces]]  # (68, 3, 3)
    return np.einsum("lk,lkd->ld", bary, tri)


class FlameLayer(torch.nn.Module):
    """Stateless FLAME forward: shape, expression and pose in, vertices out.

    Args:
        data: FLAME arrays.
        n_shape: identity components used (DECA 100, MICA 300).
        n_exp: expression components used (DECA 50, MICA 0).
    """

    def __init__(self, data: FlameData, n_shape: int, n_exp: int) -> None:
        super().__init__()
        total = data.shapedirs.shape[2]
        if n_shape > N_SHAPE_TOTAL or (n_exp and N_SHAPE_TOTAL + n_exp > total):
            raise ValueError(f"FLAME has {total} shape+expression directions; asked for "
                             f"{n_shape} shape and {n_exp} expression.")
        dirs = [data.shapedirs[:, :, :n_shape]]
        if n_exp:
            dirs.append(data.shapedirs[:, :, N_SHAPE_TOTAL:N_SHAPE_TOTAL + n_exp])
        self.n_shape, self.n_exp = n_shape, n_exp
        self.register_buffer("v_template", torch.as_tensor(data.v_template))
        self.register_buffer("shapedirs", torch.as_tensor(np.concatenate(dirs, axis=2)))
        self.register_buffer("posedirs", torch.as_tensor(data.posedirs))
        self.register_buffer("j_regressor", torch.as_tensor(data.j_regressor))
        self.register_buffer("weights", torch.as_tensor(data.weights))
        self.parents = [int(p) for p in data.parents]

    def forward(self, shape: torch.Tensor, expression: torch.Tensor | None = None,
                pose: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices of a batch.

        Args:
            shape: (B, n_shape) identity coefficients.
            expression: (B, n_exp) expression coefficients (or None when n_exp is 0).
            pose: (B, 3 J) axis-angle per joint (global, neck, jaw, eyes); None = rest.

        Returns:
            (B, V, 3) vertices in metres.
        """
        b = shape.shape[0]
        betas = shape if expression is None else torch.cat([shape, expression], dim=1)
        if betas.shape[1] != self.shapedirs.shape[2]:
            raise ValueError(f"FLAME expects {self.n_shape} shape + {self.n_exp} expression "
                             f"coefficients, got {betas.shape[1]}.")
        v_shaped = self.v_template + torch.einsum("bl,vkl->bvk", betas, self.shapedirs)
        n_j = len(self.parents)
        if pose is None:
            pose = shape.new_zeros(b, 3 * n_j)
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(b, n_j, 3, 3)
        eye = torch.eye(3, dtype=shape.dtype, device=shape.device)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(b, -1, 3)
        joints = torch.einsum("bvk,jv->bjk", v_shaped, self.j_regressor)
        # kinematic chain: world transform of every joint
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        transforms = []
        for j in range(n_j):
            local = torch.eye(4, dtype=shape.dtype, device=shape.device).repeat(b, 1, 1)
            local[:, :3, :3] = rot[:, j]
            local[:, :3, 3] = rel[:, j]
            transforms.append(local if self.parents[j] < 0
                              else transforms[self.parents[j]] @ local)
        world = torch.stack(transforms, dim=1)  # (B, J, 4, 4)
        # remove the rest-pose joint position: A_j = T_j - T_j[:3,:3] J_j
        offset = (world[:, :, :3, :3] @ joints[..., None])[..., 0]
        world = world.clone()
        world[:, :, :3, 3] = world[:, :, :3, 3] - offset
        blend = torch.einsum("vj,bjmn->bvmn", self.weights, world)
        homo = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], dim=-1)
        return (blend @ homo[..., None])[:, :, :3, 0]
