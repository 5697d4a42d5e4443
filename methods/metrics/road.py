"""ROAD: Remove And Debias (pure: tensors in, arrays out).

Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022. A fraction f of the pixels is removed in the order of the map
(signed: the strongest positive evidence first), most relevant first (MoRF) or least relevant
first (LeRF), and the removed pixels are filled by noisy linear imputation, which hides the
shape of the removed set from the model; the curve is the explained class's softmax
probability against f.

Noisy linear imputation (the paper's code, also pytorch-grad-cam's and Quantus's): every
removed pixel i of every channel equals the weighted mean of its in-image 8-neighbours,
weights 1/6 for the four edge neighbours and 1/12 for the four diagonal ones,

    d_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij v_j,    d_i = sum_{j in image} w_ij,

(so a pixel on the border averages its in-image neighbours only), then Gaussian noise of
standard deviation ``noise`` (on the [0, 1] pixel scale, where the paper's code imputes, before
normalisation) is added to the removed pixels; nothing is clipped. The matrix is symmetric and,
as long as one pixel is kept, positive definite (every removed region reaches a kept pixel
through neighbours on a connected grid). The systems of all images, channels and fractions of a
batch are solved together (``linear_imputation``): on an accelerator by Jacobi-preconditioned
conjugate gradients in torch, the operator applied as a 3x3 convolution, each system stopping
when its residual falls below ``tolerance`` times its right-hand side (so an image's result does
not depend on the other images of its batch); on the CPU by one sparse LU of the block-diagonal
system of the batch (scipy's SuperLU), faster there than the iterations. Either way the imputed
images go through the model in full batches.

Counts: fraction f removes floor(f * H * W) pixels (the paper's ``int(width * height * th_p)``),
ties in the map broken by pixel index (row-major) in both orders, so a constant map removes the
same pixels first under MoRF and LeRF. The noise is one seeded draw per fraction, shared by
every image and both orders, so a score depends neither on the device nor on the batch.

Scores: the normalised area under each curve over the fractions (trapezoids, divided by the
span of the fractions: the curve's mean height, a probability), ``road_morf`` (lower is
better) and ``road_lerf`` (higher is better), and ``road_combined`` = (LeRF - MoRF) / 2 (higher
is better), pytorch-grad-cam's ``ROADCombined`` sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as functional

from legx.methods.metrics.pixel_ranking import RankedPixels, evaluate, prepare, target_tensor
from legx.methods.metrics.road_options import (
    NEIGHBOUR_WEIGHTS,
    ROAD_NOISE,
    ROAD_STEPS,
    ROAD_TOLERANCE,
    check_road_options,
)


SOLVERS = ("auto", "direct", "cg")


def linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    tolerance: float = ROAD_TOLERANCE,
    max_iterations: int | None = None,
    solver: str = "auto",
) -> torch.Tensor:
    """Images (M, C, H, W) with the pixels ``removed`` (M, H, W) bool replaced by the solution of
    the neighbour-mean system (module docstring), without noise; kept pixels unchanged.

    All M * C systems are solved together, in float64: ``solver`` 'cg' by Jacobi-preconditioned
    conjugate gradients in torch on the images' device, each system stopping when its residual
    is below ``tolerance`` times its right-hand side (RuntimeError where one has not after
    ``max_iterations``, default the number of pixels, CG's exact bound); 'direct' by one sparse
    LU factorisation (scipy's SuperLU) of the block-diagonal system of all M images, its right-hand
    sides the C channels; 'auto' takes 'cg' on an accelerator and 'direct' on the CPU, where the
    direct solve is the faster. Raises ValueError where an image keeps no pixel.
    """
    n_images, channels, height, width = images.shape
    if removed.shape != (n_images, height, width):
        raise ValueError(f"removed must have shape {(n_images, height, width)}, got {tuple(removed.shape)}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    all_removed = removed.reshape(n_images, -1).all(dim=1)
    if bool(all_removed.any()):
        rows = torch.nonzero(all_removed).flatten().tolist()
        raise ValueError(f"removal leaves no kept pixel to impute from in image(s) {rows}")
    if solver == "direct" or (solver == "auto" and images.device.type == "cpu"):
        filled = _direct_solve(images.detach().cpu().numpy().astype(np.float64), removed.cpu().numpy())
        return torch.from_numpy(filled).to(device=images.device, dtype=images.dtype)
    return _conjugate_gradients(images, removed, tolerance, max_iterations)


def _direct_solve(values: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The block-diagonal system of all images (one unknown per removed pixel, the channels as
    right-hand sides), assembled offset by offset and solved by one sparse LU."""
    n_images, channels, height, width = values.shape
    flat = values.reshape(n_images, channels, height * width)
    image_of, pixel_of = np.nonzero(removed.reshape(n_images, height * width))
    n_unknowns = len(image_of)
    unknown = np.full((n_images, height * width), -1, dtype=np.int64)
    unknown[image_of, pixel_of] = np.arange(n_unknowns)
    rows, cols = pixel_of // width, pixel_of % width
    diagonal = np.zeros(n_unknowns)
    rhs = np.zeros((n_unknowns, channels))
    entries = [(np.arange(n_unknowns), np.arange(n_unknowns), diagonal)]
    for d_row in (-1, 0, 1):
        for d_col in (-1, 0, 1):
            weight = NEIGHBOUR_WEIGHTS[d_row + 1, d_col + 1]
            if weight == 0:
                continue
            inside = np.nonzero((rows + d_row >= 0) & (rows + d_row < height)
                                & (cols + d_col >= 0) & (cols + d_col < width))[0]
            diagonal[inside] += weight
            neighbour = (rows[inside] + d_row) * width + cols[inside] + d_col
            other = unknown[image_of[inside], neighbour]
            free = other >= 0
            entries.append((inside[free], other[free], np.full(int(free.sum()), -weight)))
            kept = inside[~free]
            rhs[kept] += weight * flat[image_of[kept], :, neighbour[~free]]
    # The diagonal is complete now that every offset has added its in-image weight.
    row_index, col_index, data = (np.concatenate(part) for part in zip(*entries))
    matrix = scipy.sparse.csc_matrix((data, (row_index, col_index)), shape=(n_unknowns, n_unknowns))
    solution = scipy.sparse.linalg.spsolve(matrix, rhs).reshape(n_unknowns, channels)
    filled = flat.copy()
    filled[image_of, :, pixel_of] = solution
    return filled.reshape(values.shape)


def _conjugate_gradients(
    images: torch.Tensor, removed: torch.Tensor, tolerance: float, max_iterations: int | None
) -> torch.Tensor:
    n_images, channels, height, width = images.shape
    device = images.device
    values = images.to(torch.float64).reshape(n_images * channels, 1, height, width)
    inside = removed.to(torch.float64).repeat_interleave(channels, dim=0).unsqueeze(1)
    kernel = torch.as_tensor(NEIGHBOUR_WEIGHTS, dtype=torch.float64, device=device).reshape(1, 1, 3, 3)

    def neighbour_sum(field: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(field, kernel, padding=1)

    diagonal = neighbour_sum(torch.ones((1, 1, height, width), dtype=torch.float64, device=device))

    def operator(field: torch.Tensor) -> torch.Tensor:
        return inside * (diagonal * field - neighbour_sum(field))

    def dot(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return (first * second).sum(dim=(1, 2, 3), keepdim=True)

    rhs = inside * neighbour_sum(values * (1.0 - inside))
    filled = torch.where(inside > 0, rhs / diagonal, values)
    # The systems still iterating (indices into the M * C systems) and their state; a system
    # stops at its own tolerance, and the stopped ones leave the batch once they are a quarter
    # of it, so the long solves of large removed regions do not drag the short ones along.
    alive = torch.arange(n_images * channels, device=device)
    solution = filled * inside
    residual = rhs - operator(solution)
    preconditioned = residual / diagonal
    direction = preconditioned.clone()
    rho = dot(residual, preconditioned)
    threshold = (tolerance * dot(rhs, rhs).sqrt()).square()
    active = dot(residual, residual) > threshold
    limit = height * width if max_iterations is None else max_iterations
    iterations = 0
    while True:
        stopped = ~active.flatten()
        if bool(stopped.all()) or 4 * int(stopped.sum()) >= len(alive):
            done = alive[stopped]
            filled[done] = torch.where(inside[stopped] > 0, solution[stopped], filled[done])
            if bool(stopped.all()):
                break
            keep = ~stopped
            alive, inside, rhs, threshold = alive[keep], inside[keep], rhs[keep], threshold[keep]
            solution, residual, direction = solution[keep], residual[keep], direction[keep]
            rho, active = rho[keep], active[keep]
        if iterations >= limit:
            worst = float((dot(residual, residual).sqrt() / dot(rhs, rhs).sqrt().clamp_min(1e-300)).max())
            raise RuntimeError(
                f"linear imputation did not converge in {limit} conjugate-gradient iterations"
                f" (worst relative residual {worst:.3g}, tolerance {tolerance:g})"
            )
        product = operator(direction)
        curvature = dot(direction, product)
        step = torch.where(active, rho / torch.where(active, curvature, 1.0), 0.0)
        solution = solution + step * direction
        residual = residual - step * product
        preconditioned = residual / diagonal
        rho_next = dot(residual, preconditioned)
        beta = torch.where(active, rho_next / torch.where(active, rho, 1.0), 0.0)
        direction = torch.where(active, preconditioned + beta * direction, direction)
        rho = rho_next
        active = active & (dot(residual, residual) > threshold)
        iterations += 1
    return filled.reshape(n_images, channels, height, width).to(images.dtype)


def road_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int] | torch.Tensor,
    fractions: Sequence[float] | None = None,
    steps: int = ROAD_STEPS,
    noise: float = ROAD_NOISE,
    tolerance: float = ROAD_TOLERANCE,
    batch_size: int = 256,
    seed: int = 0,
    solver: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(MoRF curves, LeRF curves), float64 (N, F): the softmax probability of ``targets`` after
    removing each fraction (``road_fractions(fractions, steps)``) of the pixels of images
    (N, 3, H, W) in [0, 1] in the order of maps (N, h, w) (upsampled to the image); NaN rows for
    maps with non-finite values. ``solver``: as ``linear_imputation`` takes it."""
    values = check_road_options(fractions, steps, noise, tolerance)
    images, full_maps, finite = prepare(model, images, maps)
    return road_curves_prepared(
        model, images, full_maps, target_tensor(targets, images), values, noise, tolerance,
        batch_size, seed, finite, solver,
    )


def road_curves_prepared(
    model: torch.nn.Module,
    images: torch.Tensor,
    full_maps: torch.Tensor,
    targets: torch.Tensor,
    fractions: np.ndarray,
    noise: float,
    tolerance: float,
    batch_size: int,
    seed: int,
    finite: np.ndarray,
    solver: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """``road_curves`` on images and image-resolution maps already on the model's device."""
    n_images, channels, height, width = images.shape
    n_fractions = len(fractions)
    device = images.device
    # MoRF ranks the map, LeRF its negation; both break ties by pixel index.
    ranks = torch.stack([
        RankedPixels(images, full_maps, by_magnitude=False, seed=seed).ranks,
        RankedPixels(images, -full_maps, by_magnitude=False, seed=seed).ranks,
    ])
    counts = torch.as_tensor(np.floor(fractions * height * width).astype(np.int64), device=device)
    generator = torch.Generator().manual_seed(seed)
    noise_fields = (noise * torch.randn((n_fractions, channels, height, width), generator=generator,
                                        dtype=torch.float64)).to(device=device, dtype=images.dtype)
    # Requests in (order, image, fraction) order.
    order_index = torch.arange(2, device=device).repeat_interleave(n_images * n_fractions)
    image_index = torch.arange(n_images, device=device).repeat_interleave(n_fractions).repeat(2)
    fraction_index = torch.arange(n_fractions, device=device).repeat(2 * n_images)

    def imputed(part: slice) -> torch.Tensor:
        order, image, fraction = order_index[part], image_index[part], fraction_index[part]
        removed = ranks[order, image] < counts[fraction].unsqueeze(1)
        removed = removed.reshape(-1, height, width)
        filled = linear_imputation(images[image], removed, tolerance, solver=solver)
        return filled + removed.unsqueeze(1) * noise_fields[fraction]

    _, log_probs, _ = evaluate(model, imputed, len(order_index), batch_size, targets[image_index])
    curves = np.exp(log_probs).reshape(2, n_images, n_fractions)
    curves[:, ~finite] = np.nan
    return curves[0], curves[1]


def road_scores(morf: np.ndarray, lerf: np.ndarray, fractions: np.ndarray) -> dict[str, np.ndarray]:
    """{road_morf, road_lerf, road_combined} (N,) from curves (N, F) at ``fractions``: the
    normalised trapezoidal area of each curve (its mean height over the fractions' span; the
    single value for one fraction) and (LeRF - MoRF) / 2."""

    def area(curves: np.ndarray) -> np.ndarray:
        if len(fractions) == 1:
            return curves[:, 0].copy()
        return np.trapezoid(curves, fractions, axis=1) / (fractions[-1] - fractions[0])

    morf_area, lerf_area = area(morf), area(lerf)
    return {"road_morf": morf_area, "road_lerf": lerf_area, "road_combined": (lerf_area - morf_area) / 2}
