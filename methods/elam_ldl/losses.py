"""Losses of the ELAM+LDL network: the Deep3D recipe plus LDL, and ELAM's target adjustment.

Room: pure torch functions (tensors in, scalar tensors out) and :func:`total_loss`, which
combines them with the named weights of :class:`~methods.elam_ldl.config.TrainConfig`.

* :func:`photometric_loss` -- Deep3D ``photo_loss``: per-pixel L2 colour distance
  ``sqrt(eps + |I - R|^2)``, masked (rendered face region x pixels inside the photo),
  summed, divided by the mask's sum.
* :func:`landmark_loss` -- Deep3D ``landmark_loss``: weighted squared 2D distance over the 68
  points, divided by ``B * 68``; coordinates are rescaled to a 224-px crop so Deep3D's
  ``w_lm`` = 1.6e-3 means the same at every input size. Weights 20 on nose 28-30 and on
  the inner mouth 60-67, 1 elsewhere (``lm_weight_*``).
* :func:`coefficient_regulariser` -- Deep3D ``reg_loss``:
  ``(w_id |id|^2 + w_exp |exp|^2 + w_tex |albedo|^2) / B``.
* :func:`gamma_regulariser` -- Deep3D: mean squared deviation of the SH coefficients from
  their mean over the colour channels (nearly monochromatic light).
* :func:`reflectance_loss` -- Deep3D ``reflectance_loss``: albedo variance over the skin.
* :func:`ldl_loss` -- LDL (DESIGN.md section 2): for K_eye = {(37,41), (38,40), (43,47),
  (44,46)} and K_lip = {(61,67), (62,66), (63,65)}, ``d_k = |p_a - p_b|`` of projected
  (``d_hat``) and target (``d``) landmarks;
  ``L = w_eye mean_Keye |d_hat - d| + w_lip mean_Klip |d_hat - d|``, each distance
  optionally divided by the *target* eye width (|36-39| or |42-45|) or mouth width (|48-54|).
* :func:`shape_loss` / :func:`expression_loss` -- ours (issue 16), synthetic rows only:
  the face-region displacement (mm^2, similarity part removed) of the identity error and
  of the error in the non-eye expression weights (Gram matrices of
  :class:`methods.elam_ldl.data.ShapeBasis`).
* :func:`landmark_targets` -- ELAM: with ``use_elam`` the detected landmarks are moved by
  :func:`methods.elam.rule.elam_adjust` with the detector's P(closed); the adjusted set
  replaces the detected one in *both* the landmark loss and the LDL targets.

Example::

    targets = landmark_targets(batch.landmarks, batch.p_closed, cfg)
    terms = total_loss(cfg, coeffs, geo.landmarks2d, targets, render_out, images, valid, dec)
    terms["total"].backward()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from methods.elam.rule import elam_adjust

if TYPE_CHECKING:
    from methods.elam_ldl.config import TrainConfig
    from methods.elam_ldl.model import Coefficients, FaceDecoder

#: LDL pairs (iBUG-68, 0-based; DESIGN.md section 2).
K_EYE = ((37, 41), (38, 40), (43, 47), (44, 46))
K_LIP = ((61, 67), (62, 66), (63, 65))
#: Width normalisers: eye corners per K_EYE pair, mouth corners for K_LIP.
_EYE_WIDTH = ((36, 39), (36, 39), (42, 45), (42, 45))
_MOUTH_WIDTH = (48, 54)
#: Deep3D's landmark loss works on 224-px crops.
REFERENCE_SIZE = 224.0


def photometric_loss(rendered: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                     eps: float = 1e-6) -> torch.Tensor:
    """Masked per-pixel L2 colour distance (Deep3D ``photo_loss``).

    Args:
        rendered: (B, H, W, 3) rendered colours.
        image: (B, H, W, 3) photo colours in [0, 1].
        mask: (B, H, W) weights in [0, 1].
        eps: added under the square root (a finite gradient at zero error).

    Returns:
        Scalar: ``sum(mask * sqrt(eps + |I - R|^2)) / max(sum(mask), 1)``.
    """
    dist = torch.sqrt(eps + ((rendered - image) ** 2).sum(-1))
    return (dist * mask).sum() / mask.sum().clamp(min=1.0)


def landmark_weights(cfg: TrainConfig) -> torch.Tensor:
    """(68,) per-landmark weights: Deep3D's 20 on 28-30 and 60-67, ``lm_weight_eyes`` on 36-47."""
    w = torch.ones(68)
    w[28:31] = cfg.lm_weight_nose
    w[60:68] = cfg.lm_weight_mouth
    w[36:48] = cfg.lm_weight_eyes
    return w


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                  input_size: int) -> torch.Tensor:
    """Weighted squared landmark error in 224-px units (Deep3D ``landmark_loss``).

    Args:
        pred: (B, 68, 2) predicted landmarks, crop pixels.
        target: (B, 68, 2) target landmarks, crop pixels.
        weights: (68,) per-landmark weights.
        input_size: crop side (pixels are rescaled by 224 / input_size).

    Returns:
        Scalar ``sum_b sum_i w_i |p - t|^2 / (B * 68)``.
    """
    k = REFERENCE_SIZE / float(input_size)
    sq = ((pred - target) * k).pow(2).sum(-1)
    return (sq * weights.to(sq)).sum() / (pred.shape[0] * pred.shape[1])


def pair_distances(landmarks: torch.Tensor, pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """(B, K) distances |p_a - p_b| of landmark pairs (zero gradient at coincident points)."""
    a = landmarks[:, [p[0] for p in pairs]]
    b = landmarks[:, [p[1] for p in pairs]]
    return torch.linalg.vector_norm(a - b, dim=-1)


def ldl_loss(pred: torch.Tensor, target: torch.Tensor, w_eye: float, w_lip: float,
             normalise: bool = True) -> torch.Tensor:
    """The Local Dynamic Loss on eyelid and inner-lip pair distances.

    Args:
        pred: (B, 68, 2) predicted (projected) landmarks.
        target: (B, 68, 2) target landmarks (ELAM-adjusted when ELAM is on).
        w_eye: weight of the eyelid term.
        w_lip: weight of the lip term.
        normalise: divide every distance by the target's eye width (eyelid pairs) or mouth
            width (lip pairs), making the loss scale-free.

    Returns:
        Scalar ``w_eye mean_Keye |d_hat - d| + w_lip mean_Klip |d_hat - d|`` (means over
        pairs and batch).
    """
    d_eye_hat, d_eye = pair_distances(pred, K_EYE), pair_distances(target, K_EYE)
    d_lip_hat, d_lip = pair_distances(pred, K_LIP), pair_distances(target, K_LIP)
    if normalise:
        eye_w = pair_distances(target, _EYE_WIDTH).clamp(min=1e-3)
        mouth_w = pair_distances(target, (_MOUTH_WIDTH,)).clamp(min=1e-3)
        d_eye_hat, d_eye = d_eye_hat / eye_w, d_eye / eye_w
        d_lip_hat, d_lip = d_lip_hat / mouth_w, d_lip / mouth_w
    return w_eye * (d_eye_hat - d_eye).abs().mean() + w_lip * (d_lip_hat - d_lip).abs().mean()


def coefficient_regulariser(c: Coefficients, w_id: float, w_exp: float,
                            w_tex: float) -> torch.Tensor:
    """Deep3D's coefficient regulariser ``(w_id |id|^2 + w_exp |exp|^2 + w_tex |tex|^2) / B``."""
    b = c.id.shape[0] if c.id.numel() else c.exp.shape[0]
    return (w_id * c.id.pow(2).sum() + w_exp * c.exp.pow(2).sum()
            + w_tex * c.albedo.pow(2).sum()) / b


def gamma_regulariser(gamma: torch.Tensor) -> torch.Tensor:
    """Deep3D's lighting regulariser: SH coefficients' spread over the colour channels."""
    g = gamma.reshape(-1, 3, 9)
    return ((g - g.mean(dim=1, keepdim=True)) ** 2).mean()


def reflectance_loss(albedo: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """Deep3D's reflectance loss: variance of the albedo over the skin vertices.

    Args:
        albedo: (B, V, 3).
        skin: (V,) bool.
    """
    m = skin.to(albedo).view(1, -1, 1)
    mean = (albedo * m).sum(1, keepdim=True) / m.sum()
    return (((albedo - mean) * m) ** 2).sum() / (albedo.shape[0] * m.sum())


def landmark_targets(landmarks: torch.Tensor, p_closed: torch.Tensor,
                     cfg: TrainConfig) -> torch.Tensor:
    """The landmark supervision: ELAM-adjusted with ``use_elam``, the detected ones otherwise.

    Args:
        landmarks: (B, 68, 2) detected landmarks.
        p_closed: (B, 2) eye-state detector P(closed).
        cfg: ``use_elam``, ``elam_variant``, ``elam_threshold``.
    """
    if not cfg.use_elam:
        return landmarks
    return elam_adjust(landmarks, p_closed, cfg.elam_variant, cfg.elam_threshold,
                       cfg.elam_open_floor)


def shape_loss(id_coeffs: torch.Tensor, target: torch.Tensor | None,
               gram: torch.Tensor | None) -> torch.Tensor:
    """Mean squared face-region vertex error (mm^2) to identity targets, over rows with one.

    Args:
        id_coeffs: (B, K) predicted identity coefficients.
        target: (B, K) targets, NaN rows have none (or None: no target at all).
        gram: (K, K) :attr:`methods.elam_ldl.data.ShapeBasis.gram`.

    Returns:
        Scalar; zero when no row has a target.
    """
    return _gram_error(id_coeffs, target, gram)


def _gram_error(pred: torch.Tensor, target: torch.Tensor | None,
                gram: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``d^T G d`` over the rows with a target (``d = pred - target``); 0 if none."""
    if target is None or gram is None:
        return pred.new_zeros(())
    has = ~torch.isnan(target).any(dim=1)
    if not bool(has.any()):
        return pred.new_zeros(())
    d = pred[has] - target[has]
    return torch.einsum("bi,ij,bj->b", d, gram, d).mean()


def expression_loss(exp: torch.Tensor, target: torch.Tensor | None,
                    gram: torch.Tensor | None) -> torch.Tensor:
    """Mean squared face-region displacement (mm^2) of expression errors, rows with a target.

    Args:
        exp: (B, J) predicted expression weights.
        target: (B, J) true weights, NaN rows have none (or None: no target at all).
        gram: (J, J) expression Gram (:attr:`methods.elam_ldl.data.ShapeBasis.exp_gram_aligned`);
            blendshapes left out of the term have zero rows and columns (the eyelid and gaze
            shapes, see ``train.expression_gram``).

    Returns:
        Scalar; zero when no row has a target.
    """
    return _gram_error(exp, target, gram)


def total_loss(
    cfg: TrainConfig,
    c: Coefficients,
    pred_landmarks: torch.Tensor,
    targets: torch.Tensor,
    rendered: Any,
    images: torch.Tensor,
    valid: torch.Tensor,
    decoder: FaceDecoder,
    identity: Any | None = None,
    shape_target: torch.Tensor | None = None,
    shape_gram: torch.Tensor | None = None,
    exp_target: torch.Tensor | None = None,
    exp_gram: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every term and their weighted sum (``total``).

    Args:
        cfg: weights and switches.
        c: coefficients of the batch.
        pred_landmarks: (B, 68, 2) projected landmarks, crop pixels.
        targets: (B, 68, 2) landmark targets (:func:`landmark_targets`).
        rendered: the decoder's :class:`~methods.render.RenderOutput`.
        images: (B, H, W, 3) photos in [0, 1].
        valid: (B, H, W) crop pixels inside the photo.
        decoder: the :class:`FaceDecoder` (albedo model, skin mask).
        identity: optional :class:`methods.elam_ldl.identity.IdentityLoss`.
        shape_target: optional (B, n_id) identity targets (synthetic rows; NaN: none).
        shape_gram: (n_id, n_id) Gram matrix of :class:`methods.elam_ldl.data.ShapeBasis`.
        exp_target: optional (B, 53) expression weights (synthetic rows; NaN: none).
        exp_gram: (53, 53) expression Gram with the unsupervised blendshapes zeroed.

    Returns:
        ``{"photo", "lm", "reg", "gamma", "reflc", "ldl", "feat", "shape", "exp_syn",
        "total"}``: the terms before their ``w_*`` weight (``ldl`` carries its own
        ``w_ldl_eye``/``w_ldl_lip``; ``ldl``/``feat`` are zero when off) and the weighted sum.
    """
    mask = rendered.mask * valid
    terms = {
        "photo": photometric_loss(rendered.image, images, mask),
        "lm": landmark_loss(pred_landmarks, targets, landmark_weights(cfg), cfg.input_size),
        "reg": coefficient_regulariser(c, cfg.w_id, cfg.w_exp, cfg.w_tex),
        "gamma": gamma_regulariser(c.gamma),
        "reflc": reflectance_loss(decoder.albedo(c.albedo), decoder.albedo.skin),
    }
    zero = terms["photo"].new_zeros(())
    terms["ldl"] = (ldl_loss(pred_landmarks, targets, cfg.w_ldl_eye, cfg.w_ldl_lip,
                             cfg.ldl_normalise) if cfg.use_ldl else zero)
    terms["feat"] = (identity(images, rendered.image, mask, targets) if identity is not None
                     else zero)
    terms["shape"] = (shape_loss(c.id, shape_target, shape_gram) if cfg.w_shape_synthetic > 0
                      else zero)
    terms["exp_syn"] = (expression_loss(c.exp, exp_target, exp_gram)
                        if cfg.w_exp_synthetic > 0 else zero)
    terms["total"] = (cfg.w_photo * terms["photo"] + cfg.w_lm * terms["lm"]
                      + cfg.w_reg * terms["reg"] + cfg.w_gamma * terms["gamma"]
                      + cfg.w_reflc * terms["reflc"] + terms["ldl"] + cfg.w_feat * terms["feat"]
                      + cfg.w_shape_synthetic * terms["shape"]
                      + cfg.w_exp_synthetic * terms["exp_syn"])
    return terms
