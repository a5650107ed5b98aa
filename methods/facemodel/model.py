"""Linear morphable face models: a data holder and a stateless, batched torch layer.

Room: geometry of parametric faces, shared by methods (fitting, ELAM+LDL network) and the
synthetic data generator. Loaders for concrete models (ICT-FaceKit, Deep3D's BFM) live
beside this file and return :class:`MorphableModel`.

Math: ``V(alpha, beta) = mean + sum_k alpha_k id_basis[k] + sum_j beta_j exp_basis[j]``,
all in metres. What the coefficients mean (PCA with unit variance, blendshape weights in
[0, 1]) is the model's own; ``exp_names`` names blendshapes where the model has them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from benchmark.types import Topology


@dataclasses.dataclass(eq=False)
class MorphableModel:
    """A linear face model in metres.

    Attributes:
        name: model id (``ict``, ``bfm``).
        mean: (V, 3) float32 mean shape, metres.
        id_basis: (K, V, 3) float32 identity basis (scaled so coefficients are ~N(0, 1)).
        exp_basis: (J, V, 3) float32 expression basis.
        faces: (F, 3) int64 triangles.
        landmark_ids: (68,) int64 vertex ids of the iBUG-68 landmarks.
        exp_names: names of the expression components (blendshapes) or None for PCA.
        regions: named (V,) bool vertex masks.
        source: file the model was read from.
    """

    name: str
    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    faces: np.ndarray
    landmark_ids: np.ndarray
    exp_names: tuple[str, ...] | None = None
    regions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        v = self.mean.shape[0]
        if self.mean.shape != (v, 3):
            raise ValueError(f"{self.name}: mean must be (V, 3), got {self.mean.shape}.")
        for field in ("id_basis", "exp_basis"):
            arr = getattr(self, field)
            if arr.ndim != 3 or arr.shape[1:] != (v, 3):
                raise ValueError(
                    f"{self.name}: {field} must be (K, {v}, 3), got {tuple(arr.shape)}."
                )
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"{self.name}: faces must be (F, 3), got {self.faces.shape}.")
        if self.faces.min() < 0 or self.faces.max() >= v:
            raise ValueError(f"{self.name}: face indices fall outside 0..{v - 1}.")
        if self.landmark_ids.shape != (68,) or self.landmark_ids.max() >= v:
            raise ValueError(f"{self.name}: landmark_ids must be 68 vertex ids below {v}.")
        if self.exp_names is not None and len(self.exp_names) != self.n_exp:
            raise ValueError(
                f"{self.name}: {len(self.exp_names)} exp_names for {self.n_exp} bases."
            )

    @property
    def n_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.mean.shape[0])

    @property
    def n_id(self) -> int:
        """Number of identity components K."""
        return int(self.id_basis.shape[0])

    @property
    def n_exp(self) -> int:
        """Number of expression components J."""
        return int(self.exp_basis.shape[0])

    def exp_index(self, name: str) -> int:
        """Index of a named expression component (e.g. ``eyeBlink_L``)."""
        if self.exp_names is None or name not in self.exp_names:
            raise KeyError(f"{self.name} has no expression component {name!r}.")
        return self.exp_names.index(name)

    def topology(self) -> Topology:
        """The mesh topology (faces, landmark ids, regions) of this model."""
        return Topology(
            name=self.name,
            faces=self.faces,
            landmark_vertex_ids=self.landmark_ids,
            regions=self.regions,
        )

    def vertices(
        self, id_coeffs: np.ndarray | None = None, exp_coeffs: np.ndarray | None = None
    ) -> np.ndarray:
        """Shape for one coefficient set, (V, 3) float32 metres (numpy convenience)."""
        out = self.mean.astype(np.float64).copy()
        if id_coeffs is not None:
            a = _check_coeffs(np.asarray(id_coeffs, np.float64), self.n_id, "identity", self.name)
            out += np.tensordot(a, self.id_basis[: a.shape[0]], axes=1)
        if exp_coeffs is not None:
            b = _check_coeffs(np.asarray(exp_coeffs, np.float64), self.n_exp, "expression",
                              self.name)
            out += np.tensordot(b, self.exp_basis[: b.shape[0]], axes=1)
        return out.astype(np.float32)

    def restrict(self, n_vertices: int, name: str | None = None) -> MorphableModel:
        """The model on its first ``n_vertices`` vertices (triangles fully inside them)."""
        keep = (self.faces < n_vertices).all(axis=1)
        if self.landmark_ids.max() >= n_vertices:
            raise ValueError(
                f"{self.name}: landmarks fall outside the first {n_vertices} vertices."
            )
        return MorphableModel(
            name=name or f"{self.name}-{n_vertices}",
            mean=self.mean[:n_vertices],
            id_basis=self.id_basis[:, :n_vertices],
            exp_basis=self.exp_basis[:, :n_vertices],
            faces=self.faces[keep],
            landmark_ids=self.landmark_ids,
            exp_names=self.exp_names,
            regions={k: v[:n_vertices] for k, v in self.regions.items()},
            source=self.source,
        )


def _check_coeffs(c: np.ndarray, limit: int, what: str, model: str) -> np.ndarray:
    if c.ndim != 1 or c.shape[0] > limit:
        raise ValueError(
            f"{model}: {what} coefficients must be a vector of at most {limit} values, "
            f"got shape {c.shape}."
        )
    return c


class MorphableModelLayer(nn.Module):
    """Stateless batched forward of a :class:`MorphableModel` (the smplx "Layer" pattern).

    Every coefficient is an argument of :meth:`forward`; the bases are buffers so
    ``.to(device)`` moves them.

    Args:
        model: the model.
        n_id: use the first ``n_id`` identity components (default all).
        n_exp: use the first ``n_exp`` expression components (default all).
        dtype: buffer dtype.
    """

    def __init__(
        self,
        model: MorphableModel,
        n_id: int | None = None,
        n_exp: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        n_id = model.n_id if n_id is None else n_id
        n_exp = model.n_exp if n_exp is None else n_exp
        if not 0 <= n_id <= model.n_id or not 0 <= n_exp <= model.n_exp:
            raise ValueError(
                f"{model.name} has {model.n_id} identity and {model.n_exp} expression "
                f"components; asked for {n_id} and {n_exp}."
            )
        self.model_name = model.name
        self.n_id, self.n_exp = n_id, n_exp
        v = model.n_vertices
        self.register_buffer("mean", torch.as_tensor(model.mean, dtype=dtype))
        self.register_buffer(
            "id_basis", torch.as_tensor(model.id_basis[:n_id].reshape(n_id, v * 3), dtype=dtype)
        )
        self.register_buffer(
            "exp_basis",
            torch.as_tensor(model.exp_basis[:n_exp].reshape(n_exp, v * 3), dtype=dtype),
        )
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.int64))
        self.register_buffer("landmark_ids", torch.as_tensor(model.landmark_ids, dtype=torch.int64))

    def forward(self, id_coeffs: torch.Tensor, exp_coeffs: torch.Tensor) -> torch.Tensor:
        """Vertices for a batch of coefficients.

        Args:
            id_coeffs: (B, n_id) identity coefficients.
            exp_coeffs: (B, n_exp) expression coefficients.

        Returns:
            (B, V, 3) vertices in metres.
        """
        if id_coeffs.ndim != 2 or id_coeffs.shape[1] != self.n_id:
            raise ValueError(
                f"{self.model_name}: id_coeffs must be (B, {self.n_id}), "
                f"got {tuple(id_coeffs.shape)}."
            )
        if exp_coeffs.ndim != 2 or exp_coeffs.shape[1] != self.n_exp:
            raise ValueError(
                f"{self.model_name}: exp_coeffs must be (B, {self.n_exp}), "
                f"got {tuple(exp_coeffs.shape)}."
            )
        if id_coeffs.shape[0] != exp_coeffs.shape[0]:
            raise ValueError("id_coeffs and exp_coeffs must have the same batch size.")
        offs = id_coeffs @ self.id_basis + exp_coeffs @ self.exp_basis
        return self.mean + offs.view(offs.shape[0], -1, 3)

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, 68, 3) landmark points of (B, V, 3) vertices."""
        return vertices[:, self.landmark_ids]
