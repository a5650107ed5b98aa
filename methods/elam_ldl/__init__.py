"""The ELAM+LDL reconstruction network (Wang & Liu 2024) and its ablations, trained here.

Room: the paper's full method on the ICT-FaceKit model: a Deep3D-style weakly supervised
ResNet regressor with ELAM-adjusted landmark targets and the Local Dynamic Loss, its
training, its four registered variants and the ablation. Ours on top (issue 16): an eye
branch that reads each eye's blendshapes from its own crop through the ELAM eye-state CNN's
frozen trunk, and a synthetic identity term. See ``docs/elam_ldl.md``.

Modules (light ones first; torch is imported only by the heavy ones):

* :mod:`~methods.elam_ldl.config` -- ``TrainConfig`` and the four presets (no torch).
* :mod:`~methods.elam_ldl.cli` -- the ``train`` and ``ablate`` subcommands (no torch).
* :mod:`~methods.elam_ldl.method` -- the registered methods ``deep3d-recipe``, ``elam``,
  ``ldl``, ``elam-ldl``.
* :mod:`~methods.elam_ldl.align` -- five-point crops (training and inference).
* :mod:`~methods.elam_ldl.albedo` -- the albedo model ICT lacks.
* :mod:`~methods.elam_ldl.model` -- network (with its eye branch), coefficient split,
  decoder, checkpoints.
* :mod:`~methods.elam_ldl.losses` -- Deep3D losses, LDL, ELAM targets.
* :mod:`~methods.elam_ldl.identity` -- the optional ArcFace identity loss.
* :mod:`~methods.elam_ldl.data` -- training data preparation and augmentation.
* :mod:`~methods.elam_ldl.train` -- the training loop.
* :mod:`~methods.elam_ldl.ablate` / :mod:`~methods.elam_ldl.ablation_plots` -- the ablation.

Example::

    from methods.elam_ldl.method import ElamLdl
    method = ElamLdl()                     # shipped checkpoint
    method.ensure_loaded("cpu")
    pred = method.predict(sample)
"""
