"""LEG's sampling moments on the model's device: sums over its independent units that give
the standard errors and the reliability of a map (``legx.methods.leg.uncertainty`` states the maths).

A unit is one independent draw of a channel: v_cj = u_cj Sigma^{-1} z_cj with u = (y(z) - y(-z)) / 2
for an antithetic pair (the pair counts once) and u = y otherwise. ``LEG.sample`` computes the sums
once per call from the responses it keeps; adaptive budgets (``legx.methods.leg.adaptive``) add the
sums of their rounds.

Scrambled Sobol draws (``LEG(draws='sobol')``) are made here too (``sobol_standard_normal``): one
independently scrambled sequence per group of units, so that the groups stay independent
replicates, which is what the reliability's Hadamard contrasts need (``legx.methods.leg.explainer`` states why).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legx.methods.lazy_imports import torch
from legx.methods.leg.solvers import grid_operators

# Disjoint groups of independent draws whose LEG estimates a map's reliability is measured on
# (a power of two: ``legx.methods.leg.uncertainty.group_contrasts``).
GROUPS = 8
# torch.quasirandom.SobolEngine.MAXDIM, written out so that validating a config needs no torch
# (tests/methods/leg/test_leg.py checks that they agree).
SOBOL_MAX_DIMENSION = 21201
# Keeps the inverse normal CDF finite should a scrambled point land on 0 or 1 exactly.
UNIT_INTERVAL_MARGIN = 1e-12


@dataclass
class UnitSums:
    """Sums over LEG's independent units, on the model's device: v_cj = u_cj Sigma^{-1} z_cj,
    u = (y(z) - y(-z)) / 2 for an antithetic pair, else y (``legx.methods.leg.uncertainty``).
    first: (N, C, p) sum_j v_cj; second: (N, C, C, p) sum_j v_cj v_dj (zero across channels in
    the ``separate`` mode, whose channels have separate draws); groups: (N, K, C, p) sum_j v_cj
    over each of K groups of units (unit j of a call goes to group j * K // m); n_units: m.
    Sums of calls with the same K add up (``add``)."""

    first: torch.Tensor
    second: torch.Tensor
    groups: torch.Tensor
    group_sizes: torch.Tensor
    n_units: int

    def add(self, other: UnitSums) -> UnitSums:
        return UnitSums(self.first + other.first, self.second + other.second,
                        self.groups + other.groups, self.group_sizes + other.group_sizes,
                        self.n_units + other.n_units)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(covariance of the mean per cell, group means, units): the unbiased sample covariance
        of the v's divided by m."""
        m = self.n_units
        mean = self.first / m
        covariance = self.second - m * mean[:, :, None] * mean[:, None, :]
        off_channel = self.second == 0  # channels drawn separately stay exactly uncorrelated
        covariance = covariance.masked_fill(off_channel, 0.0) / (m * max(m - 1, 1))
        group_leg = self.groups / self.group_sizes[None, :, None, None]
        return covariance, group_leg, m


def unit_groups(n_units: int, n_groups: int | None = None) -> list[torch.Tensor]:
    """The indices of each group of a call's units: K contiguous, near-equal runs, K being
    ``n_groups`` or the largest power of two up to ``GROUPS`` and the units (powers of two for
    Hadamard contrasts)."""
    if n_groups is None:
        n_groups = 1 << (min(GROUPS, n_units).bit_length() - 1)
    return list(torch.tensor_split(torch.arange(n_units), n_groups))


def sobol_standard_normal(
    n_sequences: int, n_units: int, dimension: int, seed: int, sequence_start: int = 0,
    n_groups: int | None = None,
) -> torch.Tensor:
    """Standard normal draws (n_sequences, n_units, dimension), float64 on the CPU, by the
    inverse normal CDF of scrambled Sobol points: the units of group k (``unit_groups``) and
    sequence s are points ``sequence_start`` onwards of a Sobol sequence scrambled with its own
    seed (from ``seed``, s and k), so groups and sequences are independent randomisations and
    each point is uniform on the unit cube. ``sequence_start`` continues the sequences of an
    earlier call (adaptive rounds)."""
    from torch.quasirandom import SobolEngine

    draws = torch.empty(n_sequences, n_units, dimension, dtype=torch.float64)
    for sequence in range(n_sequences):
        for group, units in enumerate(unit_groups(n_units, n_groups)):
            scramble_seed = np.random.SeedSequence([seed, sequence, group]).generate_state(1)[0]
            engine = SobolEngine(dimension, scramble=True, seed=int(scramble_seed))
            engine.fast_forward(sequence_start)
            points = engine.draw(len(units), dtype=torch.float64)
            draws[sequence, units] = points.clamp(UNIT_INTERVAL_MARGIN, 1 - UNIT_INTERVAL_MARGIN)
    return torch.special.ndtri(draws)


def unit_sums(
    responses: torch.Tensor, noise: torch.Tensor, n_samples: int, channel_mode: str,
    antithetic: bool, grid_size: int, noise_level: float, n_groups: int | None = None,
) -> UnitSums:
    """``UnitSums`` of one call: responses (N, forwards) y_i, noise (forwards, 3, p) as
    ``LEG._draw_noise`` lays it out for ``n_samples`` per channel; its K groups are
    ``unit_groups(m, n_groups)``."""
    n_channels = 1 if channel_mode == "shared" else 3
    n = n_samples
    if channel_mode == "separate":
        channel_responses = responses.unflatten(1, (3, n))  # (N, C, n)
        channel_noise = torch.stack([noise[c * n : (c + 1) * n, c] for c in range(3)])
    else:
        channel_responses = responses[:, None, :].expand(-1, n_channels, -1)
        channel_noise = noise[:, :n_channels].transpose(0, 1)  # (C, n, p)
    n_units = n // 2 if antithetic else n
    units = channel_responses[..., :n_units]
    if antithetic:
        units = (units - channel_responses[..., n_units:]) / 2
    inverse = torch.as_tensor(
        grid_operators(grid_size).unit_inverse / noise_level**2,
        dtype=torch.float64, device=responses.device,
    )
    whitened = channel_noise[:, :n_units].double() @ inverse  # (C, m, p): Sigma^{-1} z
    first = torch.einsum("ncj,cjp->ncp", units, whitened)
    pairs = [(c, c) for c in range(n_channels)]
    if channel_mode != "separate":
        # One forward perturbs every channel: the channels' estimates share its response.
        pairs += [(c, d) for c in range(n_channels) for d in range(n_channels) if c != d]
    second = torch.zeros(responses.shape[0], n_channels, n_channels, whitened.shape[-1],
                         dtype=torch.float64, device=responses.device)
    for c, d in pairs:
        second[:, c, d] = (units[:, c] * units[:, d]) @ (whitened[c] * whitened[d])
    bounds = unit_groups(n_units, n_groups)
    groups = torch.stack(
        [torch.einsum("ncj,cjp->ncp", units[..., b[0] : b[-1] + 1], whitened[:, b[0] : b[-1] + 1])
         for b in bounds],
        dim=1,
    )
    sizes = torch.tensor([len(b) for b in bounds], dtype=torch.float64, device=responses.device)
    return UnitSums(first, second, groups, sizes, n_units)
