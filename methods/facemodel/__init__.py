"""Morphable face models (ICT-FaceKit shipped; Deep3D's BFM from a user's file).

Room: parametric face geometry. ``load_ict`` returns the embedded default model;
``read_bfm``/``load_bfm`` read Deep3D's ``BFM_model_front.mat``; ``regions`` holds the
topology tables (eyelid/lip pairs, NoW 7 ids, region masks).
"""

from methods.facemodel.bfm import load_bfm, read_bfm
from methods.facemodel.ict import load_ict, load_ict_eyeballs
from methods.facemodel.model import MorphableModel, MorphableModelLayer
from methods.facemodel.regions import landmark_tables

__all__ = [
    "MorphableModel", "MorphableModelLayer", "landmark_tables", "load_bfm", "load_ict",
    "load_ict_eyeballs", "read_bfm",
]
