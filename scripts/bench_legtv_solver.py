"""LEG-TV's programs: the batched interior-point solver (the default) against the exact solve
one program at a time (Clarabel), and a batched first-order candidate that was measured and not
adopted, side by side on the programs the finish step solves.

    python scripts/bench_legtv_solver.py --skip admm,optima        # grids 8, 16, 28; demo model
    python scripts/bench_legtv_solver.py --grids 28 --model resnet18 --skip admm,optima
    python scripts/bench_legtv_solver.py --grids 28 --iterations 100,300,1000,3000  # all sections

Statistics: ``LEG.sample`` on 4 images, 342 samples per channel (channels separate, antithetic,
noise 0.02): the bundled demo model on demo images (64 px), or with ``--model resnet18`` a
random-weight torchvision resnet18 on scikit-image's photographs (224 px).

Sections (each prints lines; the last line is one JSON object with every number):
  finish      CPU seconds per image of ``finish_legtv`` (lambdas 0.1 and 0.3), maps only and with
              the reliability (2 (draws + 1) more programs per channel and lambda), one core:
              the batched solver (BATCHED, default), Clarabel on its own conic form (CLARABEL),
              and Clarabel through cvxpy's canonical form, all images in one call; the batched
              solver again with the images finished 1 and 2 per call (a job's finish tasks take
              ``solve_batch_size`` images, a model call's by default); and LEG's finish step (map,
              standard errors, reliability)
  batched     every program of the finish step solved by the batched solver in one call, against
              Clarabel one by one: ms per program, iterations, the share that converged (the rest
              fall back to Clarabel), and the acceptance bars: objective difference, constraint
              violation, the Spearman of each program's snapped solution and of the stored maps
              with Clarabel's
  admm        the first-order candidate, ADMM on every program at once as array operations
              (below), at several iteration caps: CPU seconds per program, the share of programs
              certified within 1e-4 of the optimum, the objective error against Clarabel's, the
              constraint violation, the Spearman of each snapped solution with Clarabel's
  polish      the ADMM candidate's identified active set (zero differences, bounds at +-lambda)
              solved as an equality system: the share of the maps' programs whose polished point
              is feasible and optimal (within 1e-6 of Clarabel's objective)
  optima      HiGHS (simplex, a vertex) against Clarabel (interior point, the centre of the
              optimal face) on the maps' programs: objective difference and snapped Spearman

The ADMM candidate. Unit scale (||b||_inf = 1, r = lambda): minimise ||u||_1 subject to u = D h,
v = A h - b, ||v||_inf <= r, with A = D + (1/p) w 1^T, w = D (D^T D)^{-1} 1, so D^T w = 1 and
A^T A = D^T D + beta 1 1^T, beta = 2/p + ||w||^2 / p^2. ADMM's h-step solves
(2 D^T D + beta 1 1^T) h = rhs for all programs at once: D^T D is the Dirichlet Laplacian of the
g x g grid, diagonalised by the 2-D type-I DST, and the rank-one term is a Sherman-Morrison
correction; D and D^T are first differences on the grid. The u-step soft-thresholds, the
v-step clips to the box; over-relaxation 1.6, penalty balanced per program from its residuals.
Every candidate point is made exactly feasible by blending with plain LEG (A h_LEG = b): the
residual scales by (1 - t), t in closed form. Certificate: from the scaled duals (z on u = D h,
y = -dual of v = A h - b), z + D (D^T D)^{-1} (A^T y - D^T z) satisfies D^T z = A^T y exactly;
scaled by 1 / max(1, ||z||_inf) the pair is dual feasible and b^T y - r ||y||_1 is a lower bound
on the optimum (weak duality of min ||D h||_1 s.t. ||A h - b||_inf <= r).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx import __version__  # noqa: E402
from legx.methods.leg.explainer import LEG  # noqa: E402
from legx.methods.leg.finish import finish_leg, finish_legtv  # noqa: E402
from legx.methods.leg.interior_point import _grid, solve_programs  # noqa: E402
from legx.methods.leg.solvers import (  # noqa: E402
    FEASIBILITY_TOLERANCE,
    TVSolveError,
    _program,
    _TVProgram,
    _pseudo_inverse_transpose,
    covariance,
    difference_matrix,
    snap_ties,
)
from legx.methods.leg.uncertainty import LEGTV_BOOTSTRAP_DRAWS, _matched_signal, spearman_rows  # noqa: E402
from legx.methods.models.loading import load_model  # noqa: E402
from legx.pipeline.demo.data import make_demo_arrays  # noqa: E402

CERTIFIED_GAP = 1e-4  # the acceptance rule: objective within 1e-4 (relative) of the optimum


class GridOperators:
    """D, D^T, A, A^T as first differences on the grid (the batched solver's) and the DST solve of
    (a D^T D + c 1 1^T) x = r, for one grid size (rows in ``difference_matrix``'s order)."""

    def __init__(self, grid_size: int) -> None:
        g = grid_size
        self.g, self.p = g, g * g
        self.shifts = _grid(g)  # D and D^T as the batched solver applies them
        one_dim = 4 * np.sin(np.pi * np.arange(1, g + 1) / (2 * (g + 1))) ** 2
        self.eigenvalues = one_dim[:, None] + one_dim[None, :]
        self.ones_solution = self.laplacian_solve(np.ones((1, g, g)))[0]  # (D^T D)^{-1} 1
        self.w = self.shifts.weights  # D (D^T D)^{-1} 1
        self.beta = 2 / self.p + (self.w @ self.w) / self.p**2

    def laplacian_solve(self, rhs: np.ndarray) -> np.ndarray:
        spectrum = scipy.fft.dstn(rhs, type=1, axes=(-2, -1), norm="ortho") / self.eigenvalues
        return scipy.fft.dstn(spectrum, type=1, axes=(-2, -1), norm="ortho")

    def solve(self, a: float, c: float, rhs: np.ndarray) -> np.ndarray:
        """(a D^T D + c 1 1^T) x = rhs: a Laplacian solve and a Sherman-Morrison correction."""
        base = self.laplacian_solve(rhs) / a
        ratio = c / a
        weight = ratio * base.sum(axis=(-2, -1)) / (1 + ratio * self.ones_solution.sum())
        return base - weight[:, None, None] * self.ones_solution

    def D(self, h: np.ndarray) -> np.ndarray:
        return self.shifts.apply(h.reshape(len(h), -1))

    def DT(self, u: np.ndarray) -> np.ndarray:
        return self.shifts.apply_transpose(u).reshape(len(u), self.g, self.g)

    def A(self, h: np.ndarray, differences: np.ndarray) -> np.ndarray:
        return differences + (h.sum(axis=(1, 2)) / self.p)[:, None] * self.w

    def AT(self, v: np.ndarray) -> np.ndarray:
        return self.DT(v) + ((v @ self.w) / self.p)[:, None, None]


def certified_point(ops, b, r, h, h_leg, z, y):
    """(feasible point, its objective, the certificate's lower bound) per program."""
    excess = np.abs(ops.A(h, ops.D(h)) - b).max(axis=1)
    t = np.clip(1 - r / np.maximum(excess, 1e-300), 0.0, 1.0)[:, None, None]
    feasible = (1 - t) * h + t * h_leg
    objective = np.abs(ops.D(feasible)).sum(axis=1)
    z = z + ops.D(ops.laplacian_solve(ops.AT(y) - ops.DT(z)))
    bound = ((b * y).sum(axis=1) - r * np.abs(y).sum(axis=1)) / np.maximum(1.0, np.abs(z).max(axis=1))
    return feasible, objective, bound


def admm(ops, b, r, checkpoints, relaxation=1.6, penalty=1.0):
    """The candidate (module docstring) on programs b (n, m) with bounds r (n,); yields, at each
    iteration count of ``checkpoints``: (iterations, CPU seconds so far, feasible point, its
    objective, lower bound, the raw iterate's violation, u, v)."""
    started, excluded = time.process_time(), 0.0
    n = b.shape[0]
    h_leg = ops.solve(1.0, ops.beta, ops.AT(b))
    h = h_leg.copy()
    u = ops.D(h)
    v = np.clip(ops.A(h, u) - b, -r[:, None], r[:, None])
    dual_u, dual_v = np.zeros_like(u), np.zeros_like(u)
    rho = np.full(n, penalty)
    for iteration in range(1, max(checkpoints, default=0) + 1):
        target_u, target_v = u - dual_u, b + v - dual_v
        h = ops.solve(2.0, ops.beta, ops.DT(target_u + target_v) + ((target_v @ ops.w) / ops.p)[:, None, None])
        differences = ops.D(h)
        residual = ops.A(h, differences) - b
        relaxed_u = relaxation * differences + (1 - relaxation) * u
        relaxed_v = relaxation * residual + (1 - relaxation) * v
        previous_u, previous_v = u, v
        shifted = relaxed_u + dual_u
        u = np.sign(shifted) * np.maximum(np.abs(shifted) - 1 / rho[:, None], 0.0)
        v = np.clip(relaxed_v + dual_v, -r[:, None], r[:, None])
        dual_u += relaxed_u - u
        dual_v += relaxed_v - v
        if iteration % 25 == 0:
            primal = np.sqrt(((differences - u) ** 2).sum(1) + ((residual - v) ** 2).sum(1))
            dual = rho * np.sqrt(((ops.DT(u - previous_u) + ops.AT(v - previous_v)) ** 2).sum((1, 2)))
            factor = np.where(primal > 10 * dual, 2.0, np.where(dual > 10 * primal, 0.5, 1.0))
            rho *= factor
            dual_u /= factor[:, None]
            dual_v /= factor[:, None]
        if iteration in checkpoints:
            feasible, objective, bound = certified_point(
                ops, b, r, h, h_leg, rho[:, None] * dual_u, -rho[:, None] * dual_v)
            violation = np.abs(residual).max(axis=1) - r
            seconds = time.process_time() - started - excluded
            paused = time.process_time()
            yield iteration, seconds, feasible, objective, bound, violation, u.copy(), v.copy()
            excluded += time.process_time() - paused  # the caller's measurements are not the solver's


def sampled_statistics(grid_size: int, images: int, samples: int, model_name: str):
    """LEG statistics of the demo model on demo images, or of a random-weight resnet18 on
    scikit-image's photographs."""
    if model_name == "demo":
        model = load_model("demo", device="cpu")
        arrays, _, _ = make_demo_arrays(images, seed=0, image_size=64)
        batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
        return LEG(n_samples=samples, grid_size=grid_size, batch_size=256).sample(model, batch)
    import tempfile

    from scripts.bench_budgets import photographs, random_resnet18

    with tempfile.TemporaryDirectory() as folder:
        model = random_resnet18(folder)
    return LEG(n_samples=samples, grid_size=grid_size, batch_size=64).sample(model, photographs(images, 224))


def finish_programs(stats, lambdas):
    """Every program ``finish_legtv`` solves, unit-scaled: (b (n, m), lam (n,), is the map's own (n,))."""
    _, alpha, estimate, noise = _matched_signal(stats.group_leg, True)
    sigma = covariance(stats.grid_size, stats.noise_level)
    simulated = range(1, 1 + LEGTV_BOOTSTRAP_DRAWS)
    statistics, own = [], []
    for image in range(len(stats)):
        signal = alpha[image] * estimate[image]
        statistics.append(stats.g_hat[image])
        own.append(True)
        for leg in ([estimate[image] + noise[image, 0], estimate[image] - noise[image, 0]]
                    + [signal + noise[image, r] for r in simulated]
                    + [signal + np.sqrt(2) * noise[image, r] for r in simulated]):
            statistics.append(leg @ sigma)
            own.append(False)
    g_hat = np.stack(statistics)  # (S, C, p)
    rhs = g_hat.reshape(-1, g_hat.shape[-1]) @ _pseudo_inverse_transpose(stats.grid_size).T
    rhs /= np.abs(rhs).max(axis=1, keepdims=True)
    own = np.repeat(own, g_hat.shape[1])
    return (np.concatenate([rhs] * len(lambdas)), np.repeat(lambdas, len(rhs)),
            np.concatenate([own] * len(lambdas)))


@contextlib.contextmanager
def clarabel_through_cvxpy():
    """The baseline: Clarabel solves cvxpy's canonical form of the program (the same solver and
    program, m more variables and 2m more rows, a fresh solver per solve)."""
    conic = _TVProgram._solve_clarabel
    _TVProgram._solve_clarabel = lambda self, rhs, lam: self._solve_cvxpy(rhs, lam, "CLARABEL")
    try:
        yield
    finally:
        _TVProgram._solve_clarabel = conic


def bench_finish(stats, lambdas, solver):
    """CPU seconds per image of the finish step, (with reliability, maps only)."""
    params = dict(lambdas=lambdas, solver=solver, formulation="sparse", absolute=True)
    finish_legtv(stats[0], params)  # builds the cached program, as a worker's first solve
    started = time.process_time()
    finish_legtv(stats, params)
    with_reliability = (time.process_time() - started) / len(stats)
    maps_only = stats.concat([stats[i] for i in range(len(stats))])
    maps_only.group_leg = None
    started = time.process_time()
    finish_legtv(maps_only, params)
    return with_reliability, (time.process_time() - started) / len(stats)


def reference_solutions(grid_size, rhs, lams, solver):
    program = _program(grid_size, "sparse")
    solutions, seconds = [], []
    for b, lam in zip(rhs, lams):
        started = time.process_time()
        try:
            solutions.append(program.solve(b, float(lam), solver))
        except TVSolveError:
            solutions.append(np.full(grid_size**2, np.nan))
        seconds.append(time.process_time() - started)
    return np.array(solutions), np.array(seconds)


def polish(ops, grid_size, b, lam, u, v):
    """The equality system of the identified active set, least squares through its normal
    equations: D_Z h = 0 on the zero differences, (A h - b)_S = +-lambda on the bounds at the box."""
    difference = difference_matrix(grid_size).tocsr()
    full = sp.csr_matrix(difference.toarray() + np.outer(ops.w, np.ones(ops.p)) / ops.p)
    zero, bound = u == 0, np.abs(np.abs(v) - lam) <= 1e-12
    system = sp.vstack([difference[zero], full[bound]]).tocsc()
    target = np.concatenate([np.zeros(zero.sum()), b[bound] + lam * np.sign(v[bound])])
    try:
        point = spla.spsolve((system.T @ system).tocsc(), system.T @ target)
    except RuntimeError:
        return None
    if not np.all(np.isfinite(point)) or np.abs(full @ point - b).max() - lam > 1e-9:
        return None
    return point


def summary(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return "median {:.1e} p90 {:.1e} max {:.1e}".format(*np.percentile(values, [50, 90, 100]))


def bench_grid(grid_size, args, lambdas, results):
    stats = sampled_statistics(grid_size, args.images, args.samples, args.model)
    key = f"g{grid_size}"
    for name, solver, context in (("batched", "BATCHED", contextlib.nullcontext),
                                  ("conic", "CLARABEL", contextlib.nullcontext),
                                  ("cvxpy", "CLARABEL", clarabel_through_cvxpy)):
        with context():
            with_reliability, maps_only = bench_finish(stats, lambdas, solver)
        print(f"finish    {grid_size:2d}x{grid_size:<2d} {name:7s} {with_reliability:7.3f} CPU-s per image with "
              f"reliability, {maps_only:7.3f} maps only ({len(stats)} images, lambdas {lambdas})")
        results[f"{key}_{name}_cpu_s_per_image"] = round(with_reliability, 4)
        results[f"{key}_{name}_maps_only_cpu_s_per_image"] = round(maps_only, 4)
    for images_per_call in (1, 2):  # a job's finish tasks take solve_batch_size images
        params = dict(lambdas=lambdas, solver="BATCHED", formulation="sparse", absolute=True)
        started = time.process_time()
        for start in range(0, len(stats), images_per_call):
            finish_legtv(stats.concat([stats[i] for i in range(start, min(start + images_per_call, len(stats)))]),
                         params)
        seconds = (time.process_time() - started) / len(stats)
        print(f"finish    {grid_size:2d}x{grid_size:<2d} batched {seconds:7.3f} CPU-s per image with reliability, "
              f"{images_per_call} image(s) per call")
        results[f"{key}_batched_cpu_s_per_image_calls_of_{images_per_call}"] = round(seconds, 4)
    started = time.process_time()
    finish_leg(stats, {"absolute": True})
    leg_seconds = (time.process_time() - started) / len(stats)
    print(f"leg       {grid_size:2d}x{grid_size:<2d} {leg_seconds:7.3f} CPU-s per image, LEG's finish step "
          f"(map, standard errors, reliability)")
    results[f"{key}_leg_finish_cpu_s_per_image"] = round(leg_seconds, 4)

    rhs, lams, own = finish_programs(stats, lambdas)
    reference, clarabel_s = reference_solutions(grid_size, rhs, lams, "CLARABEL")
    difference = difference_matrix(grid_size)
    optimum = np.abs(reference @ difference.T).sum(axis=1)
    programs_per_image = len(rhs) / len(stats)
    snapped_reference = np.array([snap_ties(x) for x in reference])
    channels = stats.g_hat.shape[1]
    p = grid_size * grid_size

    def stored_maps(snapped):  # the maps as stored: mean over channels of |snapped solution|
        return np.abs(snapped[own].reshape(-1, channels, p)).mean(axis=1)

    if "batched" not in args.skip:
        solve_programs(grid_size, rhs[:1], lams[:1])  # the grid's operators, as a worker's first call
        started = time.process_time()
        batch = solve_programs(grid_size, rhs, lams)
        batched_ms = (time.process_time() - started) / len(rhs) * 1e3
        program = _program(grid_size, "sparse")
        violation = np.array([program.residual(x, b) - lam for x, b, lam in zip(batch.solutions, rhs, lams)])
        accepted = batch.converged & (violation <= FEASIBILITY_TOLERANCE)
        objective = np.abs(batch.solutions @ difference.T).sum(axis=1)
        gap = np.abs(objective - optimum) / np.maximum(optimum, 1e-12)
        snapped = np.array([snap_ties(x) for x in batch.solutions])
        agreement = spearman_rows(snapped, snapped_reference)
        map_agreement = spearman_rows(stored_maps(snapped), stored_maps(snapped_reference))
        print(f"batched   {grid_size:2d}x{grid_size:<2d} {batched_ms:7.2f} ms per program against Clarabel's "
              f"{np.median(clarabel_s) * 1e3:.2f} (median of {len(rhs)}; {programs_per_image:.0f} programs per "
              f"image); iterations median {np.median(batch.iterations):.0f} max {batch.iterations.max()}; "
              f"accepted {accepted.mean():.3f}; objective difference max {gap[accepted].max():.1e}; violation max "
              f"{violation[accepted].max():.1e}; Spearman per program min {agreement[accepted].min():.4f} median "
              f"{np.median(agreement[accepted]):.4f}, of the maps min {map_agreement.min():.4f}")
        results[f"{key}_batched"] = {
            "ms_per_program": round(batched_ms, 3),
            "clarabel_ms_per_program": round(float(np.median(clarabel_s)) * 1e3, 2),
            "iterations_median": float(np.median(batch.iterations)), "iterations_max": int(batch.iterations.max()),
            "accepted": round(float(accepted.mean()), 4),
            "objective_difference_max": float(gap[accepted].max()),
            "violation_max": float(violation[accepted].max()),
            "spearman_min": round(float(agreement[accepted].min()), 4),
            "spearman_median": round(float(np.median(agreement[accepted])), 4),
            "map_spearman_min": round(float(map_agreement.min()), 4),
        }

    ops = GridOperators(grid_size)
    checkpoints = [] if "admm" in args.skip else sorted(int(value) for value in args.iterations.split(","))
    for iterations, seconds, point, objective, bound, violation, u, v in admm(ops, rhs, lams, checkpoints):
        gap = (objective - bound) / np.maximum(bound, 1e-300)
        certified = (bound > 0) & (gap <= CERTIFIED_GAP)
        error = (objective - optimum) / optimum
        excess = (bound - optimum) / optimum
        snapped = np.array([snap_ties(x) for x in point.reshape(len(rhs), -1)])
        agreement = spearman_rows(snapped, snapped_reference)
        map_agreement = spearman_rows(stored_maps(snapped), stored_maps(snapped_reference))
        per_program_ms = seconds / len(rhs) * 1e3
        print(f"admm      {grid_size:2d}x{grid_size:<2d} {iterations:5d} iterations {per_program_ms:7.2f} ms per "
              f"program; certified {certified.mean():.3f}; objective error {summary(error)}; "
              f"raw violation {summary(np.maximum(violation, 0))}; Spearman per program min {agreement.min():.3f} "
              f"median {np.median(agreement):.3f}, of the maps min {map_agreement.min():.3f}; "
              f"bound - optimum max {excess.max():.1e}")
        results[f"{key}_admm_{iterations}"] = {
            "ms_per_program": round(per_program_ms, 3), "certified": round(float(certified.mean()), 4),
            "objective_error_median": float(np.median(error)), "objective_error_max": float(error.max()),
            "violation_median": float(np.median(np.maximum(violation, 0))),
            "spearman_min": round(float(agreement.min()), 4), "spearman_median": round(float(np.median(agreement)), 4),
            "map_spearman_min": round(float(map_agreement.min()), 4), "bound_excess_max": float(excess.max()),
        }
        maps = np.nonzero(own)[0]
        polished = [polish(ops, grid_size, rhs[i], lams[i], u[i], v[i]) for i in maps]
        optimal = [x is not None and np.abs(difference @ x).sum() <= optimum[i] * (1 + 1e-6)
                   for x, i in zip(polished, maps)]
        print(f"polish    {grid_size:2d}x{grid_size:<2d} {iterations:5d} iterations: {sum(optimal)} of "
              f"{len(maps)} maps' programs feasible and optimal")
        results[f"{key}_polish_{iterations}"] = f"{sum(optimal)}/{len(maps)}"

    if "optima" in args.skip:
        return
    maps = np.nonzero(own)[0]
    vertices, _ = reference_solutions(grid_size, rhs[maps], lams[maps], "HIGHS")
    vertex_objective = np.abs(vertices @ difference.T).sum(axis=1)
    for lam in lambdas:
        chosen = lams[maps] == lam
        snapped_vertices = np.array([snap_ties(x) for x in vertices[chosen]])
        agreement = spearman_rows(snapped_vertices, snapped_reference[maps][chosen])
        combined = spearman_rows(  # the stored map: mean over channels of |snapped solution|
            np.abs(snapped_vertices.reshape(-1, channels, p)).mean(axis=1),
            np.abs(snapped_reference[maps][chosen].reshape(-1, channels, p)).mean(axis=1))
        gap = np.abs(vertex_objective[chosen] - optimum[maps][chosen]) / optimum[maps][chosen]
        print(f"optima    {grid_size:2d}x{grid_size:<2d} lambda {lam}: HiGHS vs Clarabel objective "
              f"{summary(gap)}; snapped Spearman per channel min {agreement.min():.3f} median "
              f"{np.median(agreement):.3f}, of the maps min {combined.min():.3f} median {np.median(combined):.3f}")
        results[f"{key}_highs_vs_clarabel_lam{lam}"] = {
            "objective_difference_max": float(gap.max()), "spearman_min": round(float(agreement.min()), 4),
            "spearman_median": round(float(np.median(agreement)), 4),
            "map_spearman_min": round(float(combined.min()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", default="8,16,28")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--samples", type=int, default=342, help="samples per channel")
    parser.add_argument("--lambdas", default="0.1,0.3")
    parser.add_argument("--model", default="demo", choices=("demo", "resnet18"),
                        help="demo: the bundled model on demo images; resnet18: random weights on "
                             "scikit-image's photographs")
    parser.add_argument("--iterations", default="100,300,1000,3000", help="ADMM checkpoints")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: batched, admm, optima")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lambdas = [float(value) for value in args.lambdas.split(",")]
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "legx": __version__,
               "model": args.model, "images": args.images, "samples": args.samples, "lambdas": lambdas}
    for grid_size in (int(value) for value in args.grids.split(",")):
        bench_grid(grid_size, args, lambdas, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
