"""ELAM's landmark adjustment rule: move detected eyelid landmarks by P(closed) per eye.

Room: the pure function at the heart of ELAM (DESIGN.md section 2). It takes landmarks and
per-eye probabilities and returns adjusted landmarks; it works on numpy arrays and on torch
tensors (differentiable in both arguments), with any leading batch dimensions.

For every vertical eyelid pair (u, l) of eye e, with P = ``p_closed[..., e]`` (pairs
(37, 41), (38, 40) for eye 0 and (43, 47), (44, 46) for eye 1; corners 36, 39, 42, 45 and
every other landmark never move):

* ``soft`` (default): m = (u + l) / 2, u' = u + P (m - u), l' = l + P (m - l). P = 0 keeps
  the pair, P = 1 closes it onto its midpoint; in between the gap shrinks to (1 - P) times
  the detected one, around the midpoint.
* ``hard``: ``soft`` with P replaced by 1 where P > ``threshold`` and 0 elsewhere.
* ``two-way``: both directions, towards the state the detector reports. The pair's gap
  becomes g' = (1 - P) max(g, f w) around its midpoint, with w the eye width (corner
  distance) and f = ``open_floor``: P = 1 closes it (as ``soft``), P = 0 keeps a gap
  that is already at least f w and *widens* a narrower one to f w, the landmarks having
  closed an eye the detector sees open. Gaps of f w or more behave exactly as ``soft``.
  The pair moves along its own upper-lower direction, or, for a pair closed to a point,
  along the normal of the corner axis (2D: towards the image top; 3D: not defined, so
  ``two-way`` takes D = 2 only).
* ``two-way-hard``: ``two-way`` with P replaced by 1 where P > ``threshold`` and 0
  elsewhere: an eye the detector calls closed closes, one it calls open keeps its gap or is
  widened to f w; an uncertain P never narrows a gap part-way.
* ``target``: the pair's distance is set to (1 - P) times the detected one, keeping the
  *lower* lid point fixed: u' = l + (1 - P) (u - l), l' = l. (Keeping the midpoint fixed
  instead would make this identical to ``soft``; anchoring on the lower lid follows what a
  blink does, the upper lid descending onto a lower lid that barely moves, and what
  detectors do on closed eyes, where the lower-lid points sit close to the closed lid
  line and the upper-lid points stay "open".)

Example::

    from methods.elam.rule import elam_adjust
    adjusted = elam_adjust(landmarks, p_closed=[0.9, 0.1])          # (68, 2) numpy
    adjusted = elam_adjust(lmk_batch, p_batch, variant="hard")       # (B, 68, 2) torch
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ElamVariant = Literal["soft", "hard", "target", "two-way", "two-way-hard"]
VARIANTS: tuple[str, ...] = ("soft", "hard", "target", "two-way", "two-way-hard")
#: ``two-way``: a gap the detector calls open is at least this share of the eye width. An
#: open eye's pair gaps from dlib sit around 0.25-0.35 eye widths (synthetic truth: open
#: apertures 0.22-0.40, data_cards/synthetic.md); 0.18 widens only gaps that are clearly
#: too narrow for an open eye.
OPEN_FLOOR = 0.18

#: (upper, lower) landmark pairs per eye, eye-index order (see benchmark.types).
EYE_PAIRS: tuple[tuple[tuple[int, int], ...], ...] = (((37, 41), (38, 40)), ((43, 47), (44, 46)))
#: Eye corners per eye; the rule never moves them.
EYE_CORNERS: tuple[tuple[int, int], ...] = ((36, 39), (42, 45))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def elam_adjust(
    landmarks: Any,
    p_closed: Any,
    variant: ElamVariant = "soft",
    threshold: float = 0.5,
    open_floor: float = OPEN_FLOOR,
) -> Any:
    """Adjusts eyelid landmarks by the per-eye probability that the eye is closed.

    Args:
        landmarks: (..., 68, D) landmarks (D = 2 pixels or D = 3 points), numpy or torch.
        p_closed: (..., 2) P(closed) per eye in [0, 1], eye-index order (eye 0 = 36-41);
            same library as ``landmarks`` or anything numpy accepts (broadcast over the
            leading dimensions). Values outside [0, 1] are clipped.
        variant: ``soft``, ``hard``, ``target`` or ``two-way`` (see the module docstring).
        threshold: ``hard`` and ``two-way-hard``: P above it closes the eye fully.
        open_floor: ``two-way`` and ``two-way-hard``: the smallest gap of an open eye, in
            eye widths.

    Returns:
        Adjusted landmarks, same shape, dtype and library as ``landmarks`` (a new array;
        the input is not modified).

    Raises:
        ValueError: unknown variant, landmarks not (..., 68, D), p_closed not (..., 2), or
            ``two-way`` with D != 2.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ELAM variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    if landmarks.ndim < 2 or landmarks.shape[-2] != 68:
        raise ValueError(f"landmarks must be (..., 68, D), got {tuple(landmarks.shape)}.")
    torch_mode = _is_torch(landmarks)
    if torch_mode:
        import torch

        p = torch.as_tensor(p_closed, dtype=landmarks.dtype, device=landmarks.device)
        p = p.clamp(0.0, 1.0)
        out = landmarks.clone()
    else:
        landmarks = np.asarray(landmarks)
        p = np.clip(np.asarray(p_closed, dtype=np.result_type(landmarks.dtype, np.float32)),
                    0.0, 1.0)
        out = landmarks.copy()
    if p.ndim < 1 or p.shape[-1] != 2:
        raise ValueError(f"p_closed must be (..., 2), one value per eye, got {tuple(p.shape)}.")
    if variant in ("hard", "two-way-hard"):
        p = (p > threshold).to(landmarks.dtype) if torch_mode else (p > threshold).astype(p.dtype)
    if variant in ("two-way", "two-way-hard"):
        if landmarks.shape[-1] != 2:
            raise ValueError("the two-way ELAM rule works on 2D landmarks (..., 68, 2).")
        return _two_way(landmarks, p, out, float(open_floor), torch_mode)
    for eye, pairs in enumerate(EYE_PAIRS):
        pe = p[..., eye][..., None]  # (..., 1) broadcasts over D
        for upper, lower in pairs:
            u = landmarks[..., upper, :]
            low = landmarks[..., lower, :]
            if variant == "target":
                out[..., upper, :] = u + pe * (low - u)  # = l + (1 - P)(u - l), exact at P = 0
            else:
                mid = 0.5 * (u + low)
                out[..., upper, :] = u + pe * (mid - u)
                out[..., lower, :] = low + pe * (mid - low)
    return out


def _two_way(landmarks: Any, p: Any, out: Any, open_floor: float, torch_mode: bool) -> Any:
    """The ``two-way`` rule (see the module docstring); ``out`` is a copy to fill."""
    if torch_mode:
        import torch

        def norm(v: Any) -> Any:
            return torch.linalg.vector_norm(v, dim=-1, keepdim=True)

        def at_least(v: Any, m: Any) -> Any:
            return torch.maximum(v, m) if _is_torch(m) else v.clamp_min(m)

        where = torch.where
    else:
        def norm(v: Any) -> Any:
            return np.linalg.norm(v, axis=-1, keepdims=True)

        at_least = np.maximum
        where = np.where
    for eye, pairs in enumerate(EYE_PAIRS):
        pe = p[..., eye][..., None]
        a, b = EYE_CORNERS[eye]
        axis = landmarks[..., b, :] - landmarks[..., a, :]
        width = at_least(norm(axis), 1e-9)
        # the corner axis turned by 90 degrees, pointing to the image top (y down)
        normal = axis[..., [1, 0]] * (axis.new_tensor([1.0, -1.0]) if torch_mode
                                      else np.array([1.0, -1.0]))
        normal = where(normal[..., 1:2] > 0, -normal, normal) / width
        for upper, lower in pairs:
            u = landmarks[..., upper, :]
            low = landmarks[..., lower, :]
            mid = 0.5 * (u + low)
            gap = norm(u - low)
            direction = where(gap > 1e-6 * width, (u - low) / at_least(gap, 1e-12), normal)
            floor = open_floor * width
            new_gap = (1.0 - pe) * floor
            narrow = gap < floor  # widened; wider gaps follow ``soft`` (exact at P = 0)
            out[..., upper, :] = where(narrow, mid + 0.5 * new_gap * direction,
                                       u + pe * (mid - u))
            out[..., lower, :] = where(narrow, mid - 0.5 * new_gap * direction,
                                       low + pe * (mid - low))
    return out


def pair_distances(landmarks: Any) -> Any:
    """Upper-lower distances of the 4 eyelid pairs, (..., 2, 2) [eye, pair] (numpy or torch)."""
    up = [u for pairs in EYE_PAIRS for u, _ in pairs]
    lo = [lw for pairs in EYE_PAIRS for _, lw in pairs]
    diff = landmarks[..., up, :] - landmarks[..., lo, :]
    if _is_torch(landmarks):
        import torch

        # vector_norm has a zero (not NaN) gradient at a closed pair
        d = torch.linalg.vector_norm(diff, dim=-1)
    else:
        d = np.linalg.norm(np.asarray(diff), axis=-1)
    return d.reshape(*d.shape[:-1], 2, 2)
