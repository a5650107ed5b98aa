"""Reading the pickles official face models ship in, without executing arbitrary code.

Room: FLAME's ``generic_model.pkl`` (a pickle of numpy arrays, chumpy ``Ch`` objects and a
scipy sparse matrix) and DECA's ``landmark_embedding.npy`` (a pickled dict holding numpy
arrays and torch tensors) must be read, but ``pickle.load`` would run whatever a file
names. :func:`load_restricted` unpickles with an allow-list: numpy array reconstruction,
scipy's sparse matrix classes, torch tensors (whose storages are read by
``torch.load(..., weights_only=True)``), and chumpy's ``Ch`` replaced by a stub whose value
is its stored array. Anything else raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list."""


class ChumpyStub:
    """Stands in for ``chumpy.ch.Ch``: keeps the pickled state, exposes the array."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def value(self) -> np.ndarray:
        """The stored array (chumpy keeps it as ``x``)."""
        st = self.state if isinstance(self.state, dict) else {}
        if "x" not in st:
            raise UnsafePickleError("a chumpy object without a stored array 'x'.")
        return np.asarray(st["x"])


def _torch_storage_from_bytes(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _allowed() -> dict[tuple[str, str], Any]:
    import copyreg

    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma

    allowed: dict[tuple[str, str], Any] = {
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        # __newobj__(cls, *args) only calls cls.__new__; cls itself must pass this list.
        ("copyreg", "__newobj__"): copyreg.__newobj__,
        ("builtins", "object"): object,
        # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): __import__("codecs").encode,
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): ma._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): ma._reconstruct,
        ("numpy.core.multiarray", "scalar"): ma.scalar,
        ("numpy._core.multiarray", "scalar"): ma.scalar,
    }
    for mod in ("chumpy.ch", "chumpy.reordering", "chumpy.ch_ops"):
        for name in ("Ch", "Select", "transpose", "Reshape", "Concatenate"):
            allowed[(mod, name)] = ChumpyStub
    try:
        import scipy.sparse as sp

        for mod in ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                    "scipy.sparse._csr"):
            allowed[(mod, "csc_matrix")] = sp.csc_matrix
            allowed[(mod, "csr_matrix")] = sp.csr_matrix
    except ImportError:  # pragma: no cover - scipy is a core dependency
        pass
    try:
        import torch
        import torch._utils

        allowed[("torch._utils", "_rebuild_tensor_v2")] = torch._utils._rebuild_tensor_v2
        allowed[("torch.storage", "_load_from_bytes")] = _torch_storage_from_bytes
    except ImportError:  # pragma: no cover
        pass
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _allowed().get((module, name))
        if target is None:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: not an array, sparse matrix, tensor or "
                f"chumpy value."
            )
        return target


def load_restricted(path: str | Path) -> Any:
    """Unpickles a file (``.pkl``, or an ``.npy`` holding a pickled object) with the allow-list.

    Chumpy values come back as :class:`ChumpyStub`; use :func:`as_array` on fields.

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the file names a callable outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist.")
    with open(path, "rb") as fh:
        if path.suffix == ".npy":
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(fh)
            if header[2] != np.dtype(object):
                fh.seek(0)
                return np.load(fh, allow_pickle=False)
        obj = _RestrictedUnpickler(fh, encoding="latin1").load()
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


def as_array(value: Any, dtype: Any = np.float32) -> np.ndarray:
    """A numpy array from an unpickled field (array, chumpy stub, sparse matrix, tensor)."""
    if isinstance(value, ChumpyStub):
        value = value.value
    if hasattr(value, "toarray"):
        value = value.toarray()
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)
