"""Speed of the built-in renderer: forward + backward on ICT faces (pytest-benchmark).

Run: ``python -m pytest tests/benchmarks/bench_render.py --benchmark-enable -q`` or, for the
headline figure (13,120-triangle ICT narrow face, 224 px, batch 8, with ratios against
references measured in the same process), ``python -m tests.benchmarks.bench_render``.

References: ``interp`` = forward + backward of the interpolation step alone on precomputed
fragments (the floor every rasteriser pays), ``batch1`` = the same render at batch 1.
"""

from __future__ import annotations

import itertools
import time

import pytest
import torch

from methods.render import (
    PinholeCamera,
    Renderer,
    euler_to_matrix,
    interpolate_torch,
    model_to_camera,
    rasterize_torch,
)

SIZES = (96, 128, 224)
BATCHES = (1, 8, 32)


def face_inputs(batch: int, size: int):
    """ICT narrow faces (13,120 triangles) filling a size x size image like Deep3D's crops."""
    from methods.facemodel import load_ict

    m = load_ict("narrow")
    g = torch.Generator().manual_seed(0)
    v = torch.from_numpy(m.mean)
    v = (v - v.mean(0))[None].repeat(batch, 1, 1)
    angles = (torch.rand(batch, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.8, 0.2])
    t = torch.tensor([[0.0, 0.0, 1.0]]).repeat(batch, 1)
    verts = model_to_camera(v, euler_to_matrix(angles), t)
    cam = PinholeCamera(focal=1015.0 * size / 224, width=size, height=size)
    albedo = 0.4 + 0.4 * torch.rand(batch, v.shape[1], 3, generator=g)
    gamma = 0.2 * torch.randn(batch, 27, generator=g)
    return verts, torch.from_numpy(m.faces), cam, albedo, gamma


def render_step(verts, faces, cam, albedo, gamma) -> None:
    """One forward + backward through the SH-shaded render (the training loop's cost)."""
    v = verts.clone().requires_grad_(True)
    a = albedo.clone().requires_grad_(True)
    out = Renderer(cam, backend="torch").render(v, faces, a, gamma)
    (out.image * out.mask[..., None]).square().mean().backward()


def interp_step(verts, faces, cam, albedo, gamma, fragments) -> None:
    """Reference: interpolation of fixed fragments, forward + backward."""
    a = albedo.clone().requires_grad_(True)
    interpolate_torch(a, fragments).square().mean().backward()


@pytest.mark.parametrize("size,batch", list(itertools.product(SIZES, BATCHES)))
def test_render_forward_backward(benchmark, size, batch):
    torch.set_num_threads(2)
    args = face_inputs(batch, size)
    benchmark(render_step, *args)


def test_interpolate_reference(benchmark):
    torch.set_num_threads(2)
    args = face_inputs(8, 224)
    frags = rasterize_torch(args[0], args[1], args[2])
    benchmark(interp_step, *args, frags)


def _best(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    """Prints the headline figure and its ratios."""
    torch.set_num_threads(2)
    args8 = face_inputs(8, 224)
    args1 = face_inputs(1, 224)
    frags = rasterize_torch(args8[0], args8[1], args8[2])
    t8 = _best(lambda: render_step(*args8))
    t1 = _best(lambda: render_step(*args1))
    ti = _best(lambda: interp_step(*args8, frags))
    print(f"render fwd+bwd, 13,120 tris, 224 px, batch 8: {t8 * 1000:.0f} ms "
          f"({t8 / 8 * 1000:.1f} ms/image, {torch.get_num_threads()} threads)")
    print(f"  vs batch 1 ({t1 * 1000:.1f} ms): {t8 / t1:.1f}x for 8x the images")
    print(f"  vs interpolation alone ({ti * 1000:.1f} ms): {t8 / ti:.1f}x")
    for size, batch in ((128, 32), (96, 16)):
        args = face_inputs(batch, size)
        t = _best(lambda a=args: render_step(*a), repeats=3)
        print(f"render fwd+bwd, {size} px, batch {batch}: {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
