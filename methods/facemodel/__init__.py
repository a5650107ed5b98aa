"""Morphable face models (ICT-FaceKit shipped; Deep3D's BFM from a user's file).

Room: parametric face geometry. ``load_ict`` returns the embedded default model.
"""

from methods.facemodel.ict import load_ict, load_ict_eyeballs
from methods.facemodel.model import MorphableModel, MorphableModelLayer

__all__ = ["MorphableModel", "MorphableModelLayer", "load_ict", "load_ict_eyeballs"]
