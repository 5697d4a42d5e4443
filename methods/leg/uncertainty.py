"""How far to trust a sampled LEG map: per-cell standard errors and a per-map reliability.

LEG (Luo, Barut & Jin, ICCV 2021; ``legx.methods.leg.explainer``) is a mean of independent terms, so the same
samples that give the map give its uncertainty. numpy and scipy only, like ``legx.methods.leg.solvers``
(the pipeline's solve tasks import no torch).

Standard errors. Per channel c the estimate is LEG_c = Sigma^{-1} g_hat_c with g_hat_c the mean
of independent terms. With antithetic pairs the n draws of a channel form m = n / 2 independent
units u_j z_j, u_j = (y(z_j) - y(-z_j)) / 2 (the two halves of a pair are not independent, so a
pair counts once); without, m = n units y_j z_j. Writing v_cj = u_cj Sigma^{-1} z_cj,

    LEG_c = (1/m) sum_j v_cj,     Cov(LEG_c, LEG_d) = Cov(v_c, v_d) / m
                                                    = Sigma^{-1} Cov(u_c z_c, u_d z_d) Sigma^{-1} / m,

estimated per cell k with the unbiased sample covariance of the v's (``LEG.sample`` accumulates
the second moments beside g_hat and ships ``leg_covariance``, (C, C, p) per image). In the
``separate`` channel mode each channel has its own draws, so Cov(LEG_c, LEG_d) = 0 for c != d;
in ``joint`` and ``shared`` one forward's response enters every channel and the cross terms are
kept. The stored map is M_k = (1/C) sum_c a(LEG_ck) with a the identity (``absolute=False``: M
is linear, so Var M_k = (1/C^2) sum_cd Cov(LEG_ck, LEG_dk) exactly) or |.| (the reference's
map). For |.| the standard error is the delta method's, a'(x) = sign(x):

    Var M_k ~ (1/C^2) sum_cd sign(LEG_ck) sign(LEG_dk) Cov(LEG_ck, LEG_dk),

which is accurate where |LEG_ck| is several standard errors from zero and conservative where it
is not (|x| has a smaller spread than x). The interval M_k +- 1.96 SE_k is then a 95% interval
of the expected map (a normal approximation of a mean of m independent terms); a cell whose
interval contains zero is not distinguishable from zero (``significant_cells`` adds a
Benjamini-Hochberg control over the map's cells).

Reliability (docs/trust.md): the Spearman rank
correlation expected between this map and the map of an independent run with the same budget
and parameters. The units of each channel are split into K disjoint groups (``LEG.sample``
ships each group's LEG, ``group_leg``); ``reliability`` is measured on them and corrected to
the full budget (see its docstring for the estimator and ``scripts/bench_reliability.py`` for
its calibration on the demo set).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy.linalg import hadamard
from scipy.stats import norm, rankdata

from legx.methods.leg.solvers import (
    DEFAULT_SOLVER,
    LegStatistics,
    TVSolution,
    combine_channels,
    covariance,
    grid_operators,
    solve_tv_batch,
)

# Simulated runs of LEG-TV's bootstrap per budget level (``legtv_reliability``; each costs a
# program per channel and lambda at each of the two levels).
LEGTV_BOOTSTRAP_DRAWS = 4
# Bounds of the bootstrap's signal fraction search (see ``reliability``).
MAX_SIGNAL_FRACTION = 1.5
BISECTION_STEPS = 10


def channel_estimates(stats: LegStatistics) -> np.ndarray:
    """LEG_c = Sigma^{-1} g_hat_c: float64 (N, C, p)."""
    return stats.g_hat @ (grid_operators(stats.grid_size).unit_inverse / stats.noise_level**2)


def _require(stats: LegStatistics, name: str) -> np.ndarray:
    value = getattr(stats, name)
    if value is None:
        raise ValueError(f"these LEG statistics carry no {name} (sampled without uncertainty)")
    return value


def channel_standard_errors(stats: LegStatistics) -> np.ndarray:
    """Standard error of each channel's LEG estimate per cell: float64 (N, C, p)."""
    covariance = _require(stats, "leg_covariance")
    return np.sqrt(np.clip(np.einsum("ncck->nck", covariance), 0.0, None))


def map_standard_errors(stats: LegStatistics, absolute: bool = True) -> np.ndarray:
    """Standard error of the stored map per cell, float32 (N, g, g), in the layout of
    ``leg_maps``: exact for the signed map, the delta method's for mean_c |LEG_c|."""
    covariance = _require(stats, "leg_covariance")
    n_channels = covariance.shape[1]
    if absolute:
        signs = np.sign(channel_estimates(stats))
        variance = np.einsum("nck,ndk,ncdk->nk", signs, signs, covariance)
    else:
        variance = covariance.sum(axis=(1, 2))
    standard_error = np.sqrt(np.clip(variance, 0.0, None)) / n_channels
    return standard_error.reshape(len(stats), stats.grid_size, stats.grid_size).astype(np.float32)


def significant_cells(saliency: np.ndarray, standard_error: np.ndarray, fdr: float = 0.05) -> np.ndarray:
    """Cells whose value differs from zero, with the false-discovery rate over the map's cells
    held at ``fdr`` (Benjamini-Hochberg on two-sided normal p-values of saliency / SE).

    Returns a bool array of the map's shape. A cell with SE 0 is significant iff it is nonzero.
    """
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must be in (0, 1), got {fdr}")
    values = np.asarray(saliency, dtype=np.float64)
    errors = np.asarray(standard_error, dtype=np.float64)
    if values.shape != errors.shape:
        raise ValueError(f"saliency {values.shape} and standard errors {errors.shape} differ in shape")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(errors > 0, np.abs(values) / errors, np.where(values != 0, np.inf, 0.0))
    p_values = 2 * norm.sf(z.ravel())
    order = np.argsort(p_values)
    thresholds = fdr * np.arange(1, p_values.size + 1) / p_values.size
    passed = np.nonzero(p_values[order] <= thresholds)[0]
    significant = np.zeros(p_values.size, dtype=bool)
    if passed.size:
        significant[order[: passed[-1] + 1]] = True
    return significant.reshape(values.shape)


def spearman_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of two (..., p) arrays (average ranks for ties;
    0 where a row is constant)."""
    first_ranks = rankdata(first, axis=-1)
    second_ranks = rankdata(second, axis=-1)
    first_ranks -= first_ranks.mean(axis=-1, keepdims=True)
    second_ranks -= second_ranks.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((first_ranks**2).sum(-1) * (second_ranks**2).sum(-1))
    numerator = (first_ranks * second_ranks).sum(-1)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def group_contrasts(group_leg: np.ndarray) -> np.ndarray:
    """Hadamard contrasts of K = 2^k groups, (N, K, C, p): contrast 0 is the groups' mean (LEG),
    contrast r > 0 is (1/K) sum_k H_rk G_k, a balanced +-1 combination whose signal cancels. For
    groups of equal size the K contrasts are uncorrelated with equal covariance, that of LEG's
    own sampling noise: contrasts 1..K-1 are K-1 draws of the noise of this very map, with its
    spatial and cross-channel correlations, and h_0 +- h_r are the two halves of split r."""
    n_groups = group_leg.shape[1]
    if n_groups < 4 or n_groups & (n_groups - 1):
        raise ValueError(f"need a power of two >= 4 groups of draws, got {n_groups}")
    return np.einsum("rk,nkcp->nrcp", hadamard(n_groups), group_leg) / n_groups


def _simulated_spearman(signal: np.ndarray, noise: np.ndarray, scale: float,
                        to_map: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Mean Spearman between the maps of signal + scale * e_a and signal + scale * e_b over pairs
    of distinct noise draws: (N, C, p) signal, (N, R, C, p) noise -> (N,). Simulated maps have
    no ties, so plain ranks serve, each map ranked once for all its pairs."""
    maps = to_map(signal[:, None] + scale * noise)  # (N, R, p)
    ranks = np.argsort(np.argsort(maps, axis=-1), axis=-1).astype(np.float64)
    ranks -= ranks.mean(axis=-1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=-1, keepdims=True)
    ranks = np.divide(ranks, norms, out=np.zeros_like(ranks), where=norms > 0)
    correlations = ranks @ ranks.transpose(0, 2, 1)  # (N, R, R)
    n_draws = noise.shape[1]
    off_diagonal = correlations.sum(axis=(1, 2)) - np.trace(correlations, axis1=1, axis2=2)
    return off_diagonal / (n_draws * (n_draws - 1))


def _matched_bootstrap(group_leg: np.ndarray, absolute: bool) -> tuple[np.ndarray, np.ndarray]:
    """(observed split-half Spearman, bootstrap prediction at the full budget) per image from
    K groups of draws; see ``reliability``."""
    half, alpha, estimate, noise = _matched_signal(group_leg, absolute)
    return half, _simulated_spearman(alpha[:, None, None] * estimate, noise, 1.0,
                                     lambda channels: combine_channels(channels, absolute))


def _matched_signal(group_leg: np.ndarray, absolute: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(observed split-half Spearman (N,), signal fraction alpha (N,), the map's LEG h_0
    (N, C, p), its K-1 noise draws (N, K-1, C, p)): the bootstrap model of ``reliability``."""
    contrasts = group_contrasts(group_leg)
    estimate, noise = contrasts[:, 0], contrasts[:, 1:]

    def to_map(channels: np.ndarray) -> np.ndarray:
        return combine_channels(channels, absolute)

    # The K-1 split halves of every image ranked in one call: (N, K-1, p) maps.
    half = spearman_rows(to_map(estimate[:, None] + noise), to_map(estimate[:, None] - noise)).mean(axis=1)
    # The signal fraction alpha at which simulated half-budget maps (sqrt(2) times the map's
    # noise) agree as the observed halves do, by bisection: their agreement grows with alpha.
    low, high = np.zeros(len(group_leg)), np.full(len(group_leg), MAX_SIGNAL_FRACTION)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        simulated = _simulated_spearman(middle[:, None, None] * estimate, noise, np.sqrt(2), to_map)
        too_much = simulated > half
        high = np.where(too_much, middle, high)
        low = np.where(too_much, low, middle)
    return half, (low + high) / 2, estimate, noise


def reliability_at_half_and_full(stats: LegStatistics, absolute: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(observed split-half Spearman, predicted full-budget reliability) per image; see
    ``reliability``."""
    group_leg = _require(stats, "group_leg")
    half, full = _matched_bootstrap(group_leg, absolute)
    if group_leg.shape[1] < 8:
        return half, full
    # The bootstrap's own error one level down: each half predicts its own (half-budget)
    # reliability from its groups, where the answer, the observed split-half agreement, is known.
    signs = hadamard(group_leg.shape[1])[1:]
    predicted_half = np.mean(
        [_matched_bootstrap(group_leg[:, np.nonzero(row == side)[0]], absolute)[1]
         for row in signs for side in (1, -1)],
        axis=0,
    )
    return half, np.clip(full - (predicted_half - half), -1.0, 1.0)


def reliability(stats: LegStatistics, absolute: bool = True) -> np.ndarray:
    """Predicted seed-to-seed Spearman of each image's LEG map: float64 (N,); NaN with fewer
    than 4 groups of draws.

    Estimator: a parametric bootstrap matched to the split halves, bias-corrected one level
    down. The K group estimates give the map's LEG h_0 and K-1 draws e_r of its own sampling
    noise (``group_contrasts``). The halves h_0 +- e_r of the K-1 balanced splits are
    independent maps at half the budget; their mean Spearman r_half is observed. A run at the
    full budget is modelled as mu + e with mu = alpha h_0: alpha is the signal fraction at which
    two simulated half-budget maps alpha h_0 + sqrt(2) e_a and alpha h_0 + sqrt(2) e_b (a != b)
    agree as the observed halves do, and the bootstrap's prediction is the simulated agreement
    of alpha h_0 + e_a and alpha h_0 + e_b. The same procedure run on each half's own 4 groups
    predicts the half-budget agreement, which is observed; their difference (the bootstrap's
    bias one budget level down, averaged over the 2 (K-1) halves) is subtracted (an iterated
    bootstrap, as in Hall, "The Bootstrap and Edgeworth Expansion", 1992, section 3.11). With
    fewer than 8 groups the correction is skipped.

    Spearman-Brown, 2 r_half / (1 + r_half), assumes the map is a signal plus noise that
    averages out like parallel tests; |.| breaks that (its noise floor is shaped by each cell's
    noise level, so it agrees between runs without being signal, and it does not shrink like
    the signal's share). On the demo set Spearman-Brown over-predicted the seed-to-seed
    agreement and this estimator did not (``scripts/bench_reliability.py``, docs/benchmarks/index.md).
    """
    group_leg = _require(stats, "group_leg")
    if group_leg.shape[1] < 4:
        return np.full(len(stats), np.nan)
    return reliability_at_half_and_full(stats, absolute)[1]


def legtv_reliability(
    stats: LegStatistics,
    lambdas: Sequence[float],
    solver: str = DEFAULT_SOLVER,
    formulation: str = "sparse",
    absolute: bool = True,
    draws: int = LEGTV_BOOTSTRAP_DRAWS,
) -> np.ndarray:
    """Predicted seed-to-seed Spearman of each image's LEG-TV maps: float64 (N, L), NaN where a
    program had no solution or with fewer than 8 groups of draws.

    Estimator: ``reliability``'s matched bootstrap pushed through the programs, bias-corrected
    one level down. LEG's bootstrap model of a run, alpha h_0 + e with alpha matched to LEG's
    observed halves (``reliability``), gives ``draws`` simulated full-budget statistics
    alpha h_0 + e_r (noise contrasts r = 2 .. draws + 1), whose LEG-TV maps' mean pairwise
    Spearman is the bootstrap's prediction; the same at half budget, alpha h_0 + sqrt(2) e_r,
    predicts the agreement of the two halves of split 1 (h_0 +- e_1), which is observed. The
    programs are not LEG, so the model does not carry over exactly: its misfit at half budget
    (observed minus simulated) is added to the full budget's prediction, as ``reliability``
    does with its own bias one level down. Each statistic is solved as g_hat = Sigma LEG:
    2 (draws + 1) programs per channel and lambda beside the map's one.

    Measured and rejected on the demo set (``scripts/bench_reliability.py``): carrying the
    halves' agreement to the full budget with the gain in odds LEG's map shows (under-predicted
    sparse lambda-0.3 maps at 1,026 forwards by 0.07), Spearman-Brown on the halves (over by up
    to 0.09), the bootstrap without its correction (under by up to 0.08)."""
    statistics = legtv_bootstrap_statistics(stats, absolute, draws)
    if statistics is None:
        return np.full((len(stats), len(lambdas)), np.nan)
    # Every program of every image in one call, so that a batched solver takes them together.
    solved = solve_tv_batch(statistics, stats.grid_size, stats.noise_level, lambdas, solver, formulation, absolute)
    return legtv_reliability_of(solved, len(stats))[0]


def legtv_bootstrap_statistics(stats: LegStatistics, absolute: bool = True,
                               draws: int = LEGTV_BOOTSTRAP_DRAWS) -> np.ndarray | None:
    """The statistics g_hat = Sigma LEG whose LEG-TV maps ``legtv_reliability`` compares: per
    image the two halves of split 1, the simulated runs at the full budget, then at half,
    (N (2 + 2 draws), C, p); None with fewer than 8 groups of draws (no reliability)."""
    group_leg = _require(stats, "group_leg")
    if group_leg.shape[1] < 8:
        return None
    _, alpha, estimate, noise = _matched_signal(group_leg, absolute)
    sigma = covariance(stats.grid_size, stats.noise_level)
    simulated = list(range(1, 1 + min(draws, noise.shape[1] - 1)))
    statistics = [
        leg
        for image in range(len(stats))
        for leg in ([estimate[image] + noise[image, 0], estimate[image] - noise[image, 0]]
                    + [alpha[image] * estimate[image] + noise[image, r] for r in simulated]
                    + [alpha[image] * estimate[image] + np.sqrt(2) * noise[image, r] for r in simulated])
    ]
    return np.stack(statistics) @ sigma


def legtv_reliability_of(solved: list[list[TVSolution]], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``legtv_reliability`` and its fallback counts (both (N, L)) from the LEG-TV solutions of
    ``legtv_bootstrap_statistics``, in its order."""
    per_image = len(solved) // n_images
    n_simulated = (per_image - 2) // 2
    n_lambdas = len(solved[0]) if solved else 0
    result = np.full((n_images, n_lambdas), np.nan)
    fallbacks = np.zeros((n_images, n_lambdas), dtype=np.int64)

    def mean_agreement(values: np.ndarray) -> np.ndarray:
        pairs = list(itertools.combinations(range(len(values)), 2))
        return np.mean([spearman_rows(values[a], values[b]) for a, b in pairs], axis=0)

    for image in range(n_images):
        solutions = solved[image * per_image:(image + 1) * per_image]
        fallbacks[image] = [sum(per_lambda[position].fallbacks for per_lambda in solutions)
                            for position in range(n_lambdas)]
        if any(solution.map is None for per_lambda in solutions for solution in per_lambda):
            continue
        maps = np.array([[solution.map.ravel() for solution in per_lambda] for per_lambda in solutions])
        halves, full, half = maps[:2], maps[2:2 + n_simulated], maps[2 + n_simulated:]
        observed = spearman_rows(halves[0], halves[1])
        result[image] = np.clip(mean_agreement(full) + observed - mean_agreement(half), -1.0, 1.0)
    return result, fallbacks
