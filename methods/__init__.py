"""Reconstruction methods behind one contract (:class:`methods.base.Method`).

Room: one adapter per method, the ELAM+LDL implementation, and the geometry they share
(face models, renderer, landmark providers). The runner sees only :data:`METHODS`.

Adding a new method:

1. Write ``methods/<name>.py`` with ``CARD = MethodCard(...)`` and a ``Method`` subclass that
   implements ``load(device)`` and ``predict(sample)``; import heavy packages inside ``load``.
2. Register it below as ``"<name>": "methods.<module>:<Class>"`` (lazy: listing methods never
   imports it).
3. Add it to ``tests/test_method_contract.py``'s expectations if it needs files or extras;
   the contract tests parametrize over this registry automatically.

See ``docs/adding_a_method.md``.
"""

from __future__ import annotations

from benchmark.registry import Registry

METHODS: Registry = Registry(
    "method",
    {
        "mean-shape": "methods.mean_shape:MeanShape",
        "oracle": "methods.oracle:Oracle",
        "fit-landmarks": "methods.fit_landmarks:FitLandmarks",
        "fit-landmarks-elam": "methods.fit_landmarks:FitLandmarksElam",
        "import": "methods.imported:ImportedMeshes",
        "deep3d": "methods.deep3d:Deep3D",
        "deca": "methods.deca:DECA",
        "mica": "methods.mica:MICA",
        "mediapipe": "methods.mediapipe_landmarker:MediaPipeFaceLandmarker",
        "3ddfa-v2": "methods.tddfa_v2:TDDFAV2",
        "deep3d-recipe": "methods.elam_ldl.method:Deep3dRecipe",
        "elam": "methods.elam_ldl.method:Elam",
        "ldl": "methods.elam_ldl.method:Ldl",
        "elam-ldl": "methods.elam_ldl.method:ElamLdl",
    },
)

__all__ = ["METHODS"]
