"""LEG, the Linearly Estimated Gradient (Luo, Barut & Jin, "Statistically Consistent Saliency
Estimation", ICCV 2021; reference code Paradise1008/LEG).

LEG perturbs the image with Gaussian noise defined on a coarse g x g grid (p = g^2 cells, each
upsampled to a block of pixels) and estimates the gradient of a score f from the first moment of
the responses (Stein's identity, E[f(x + z) z] = Sigma grad f for small noise):

    D          first differences between grid neighbours plus one row per border cell (zero
               padding): (2g(g-1) + 4g) x p, full column rank, D^T D = 4I - A_grid
    Sigma      s^2 (D^T D + (1/p) 1 1^T),  s = noise_level on the [0, 1] pixel scale
    z_i        ~ N(0, Sigma), block-upsampled to the image (sizes need not divide by g)
    y_i        f(clip(x + up(z_i), 0, 1)) - f(x)   (``clip=False``: f(x + up(z_i)) - f(x))
    g_hat      (1/n) sum_i y_i z_i
    LEG        Sigma^{-1} g_hat, per colour channel; the map is mean_c |LEG_c| on the grid

f is the softmax probability of the explained class (default: the clean top-1), optionally minus
the probability of an ``opposite`` class (the reference's contrast), or the logit.

Departures from the reference code (Paradise1008/LEG, ``methods/LEGv0.py``), each an option:

    choice            reference                         legx default (option for the reference)
    clipping          none (its clip is commented out)  clip to [0, 1]           (clip=False)
    draws             plain i.i.d. (antithetic option)  antithetic pairs         (antithetic=False)
    channels          one per forward (3n forwards)     separate, the same       (channel_mode)
    budget            200 per channel (2,000 ImageNet)  2,000 per channel        (n_samples)

Clipping keeps every perturbed image a valid image; where the image is saturated (pixels at 0 or
1) it also halves the perturbation there (only one sign survives), so the estimate there is no
longer Stein's identity's. ``clip=False`` feeds the model values outside [0, 1], as the
reference does; its estimate is then exactly the reference's on the same draws.

Channel modes: ``separate`` is the reference (one channel perturbed per forward, 3n forwards per
image); ``joint`` draws independent noise for the three channels of one forward (n forwards, the
same expectation per channel since the channels' draws are independent); ``shared`` adds one draw
to all channels (n forwards, one luminance gradient). ``antithetic`` uses pairs (z, -z), which
cancels the even-order terms of f's expansion and lowers the variance of g_hat. The defaults,
``separate`` with antithetic pairs, were chosen by ``scripts/bench_estimator.py``: at equal
forwards they came closest to the exact (autograd) gradient on the demo model; ``joint`` pays for
perturbing three channels at once with more nonlinear bias, and plain sampling with twice the
error of antithetic pairs.

Quasi-random draws (``draws='sobol'``; default ``'random'``, the plain pseudo-random draws).
A draw is z = s L Phi^{-1}(u), L the Cholesky factor of the unit covariance (Sigma = s^2 L L^T),
Phi^{-1} the inverse normal CDF applied per coordinate and u a point of a scrambled Sobol
sequence (Owen-style linear matrix scrambling plus a random digital shift,
``torch.quasirandom.SobolEngine(scramble=True)``) instead of a pseudo-random uniform. A
scrambled point is uniform on the unit cube, so each z is still exactly N(0, Sigma) and
E[g_hat] does not change: the estimator and its expectation are LEG's. What changes is that
the points of one sequence are not independent: they fill the cube more evenly than
independent points, which is what lowers the error of a mean over them, and which also
breaks the assumption of the unit moments (``legx.methods.leg.uncertainty``) that the terms of
g_hat are independent. legx therefore gives each of the K groups of units that the
reliability is measured on (``legx.methods.leg.moments.GROUPS``) its own independently scrambled
sequence (in ``separate`` mode, one per channel too): the groups are independent replicates
of the same randomised quasi-Monte Carlo rule, the standard randomised-QMC error estimate,
so the Hadamard contrasts of the groups still draw this map's own sampling noise and the
reliability keeps its meaning (measured calibrated on a linear logit, docs/benchmarks/index.md). The per-cell
standard errors still come from the spread of the units, which measures the error of
independent draws, so with Sobol draws they are not what they claim: where a sequence holds
many points per grid cell they overstate the error (conservative intervals), where it holds
few they can understate it (Sobol points then fill pairs of coordinates unevenly, and the
products y z that g_hat averages pay for it). Sobol draws are therefore an option outside the
certified defaults. Adaptive budgets continue every group's sequence from round to round. The
measured effect (``scripts/bench_reliability.py``, docs/benchmarks/index.md) follows the same line: fewer errors
than random draws only with many points per group and sequence against p.

LEG is a sampled explainer (``legx.methods.base``): ``LEG.sample`` runs the forwards (on the model's
device, packing the perturbations of several images into each forward batch) and returns the
sufficient statistics; its finish step (``legx.methods.leg.finish``, no torch) turns them into maps
with ``leg_maps`` on the CPU, and LEG-TV's solves its programs from the same statistics, which
the job draws once for both when their sampling parameters agree. The same
seeded noise is used for every image of a call, so an image's map does not depend on which
other images share its batch. The statistics also carry the moments of LEG's independent terms
(``legx.methods.leg.moments``), from which ``legx.methods.leg.uncertainty`` gives each cell's standard
error and each map's reliability; ``n_samples='auto'`` samples in rounds until the map is
reliable enough (``legx.methods.leg.adaptive``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from legx.methods.base import SampledExplainer, batches, check_images, model_device, resolve_targets
from legx.methods.lazy_imports import inference_mode, torch
from legx.methods.leg.perturbation import perturb
from legx.methods.leg.moments import SOBOL_MAX_DIMENSION, sobol_standard_normal, unit_sums
from legx.methods.leg.solvers import LegStatistics, grid_operators, leg_maps

CHANNEL_MODES = ("separate", "joint", "shared")
DRAWS = ("random", "sobol")
ADAPTIVE_PARAMETERS = ("target_reliability", "max_samples", "round_samples", "fill_batches")
SCORES = ("prob", "logit")


class LEG(SampledExplainer):
    """LEG saliency maps at grid resolution, (N, grid_size, grid_size) float32.

    n_samples: perturbations per image (per channel in ``separate`` mode, which therefore costs
    3 * n_samples forwards), or 'auto' for an adaptive budget (``legx.methods.leg.adaptive``):
    rounds of ``round_samples`` per channel until the map's predicted reliability reaches
    ``target_reliability`` or ``max_samples`` per channel are spent; noise_level: s; grid_size:
    g; batch_size: images per forward;
    channel_mode: 'separate' | 'joint' | 'shared'; antithetic: draw pairs (z, -z) (n_samples must
    be even); score: 'prob' or 'logit'; absolute: map = mean_c |LEG_c| (False: signed mean);
    clip: clip perturbed pixels to [0, 1] (False: as the reference code, which does not);
    seed: the noise is reproducible for a seed on a given device type; draws: 'random'
    (pseudo-random normal draws) or 'sobol' (scrambled Sobol points through the inverse normal
    CDF, one sequence per group of units: module docstring); fill_batches (adaptive budgets):
    run the next rounds of the images still sampling in a batch's free rows, discarding those
    past an image's stop, so that maps are unchanged (``legx.methods.leg.adaptive``); None: on CUDA.
    """

    name = "leg"
    finisher = "legx.methods.leg.finish:finish_leg"
    finish_params = ("absolute",)

    def __init__(
        self,
        n_samples: int | str = 2000,
        noise_level: float = 0.02,
        grid_size: int = 28,
        batch_size: int = 256,
        channel_mode: str = "separate",
        antithetic: bool = True,
        score: str = "prob",
        absolute: bool = True,
        clip: bool = True,
        seed: int = 0,
        target_reliability: float = 0.9,
        max_samples: int = 4096,
        round_samples: int = 64,
        draws: str = "random",
        fill_batches: bool | None = None,
    ) -> None:
        problems = []
        adaptive = n_samples == "auto"
        if not adaptive and (isinstance(n_samples, (bool, str)) or int(n_samples) != n_samples):
            problems.append(f"n_samples must be an integer or 'auto', got {n_samples!r}")
        elif not adaptive and n_samples < 2:
            problems.append(f"n_samples must be >= 2, got {n_samples}")
        elif not adaptive and antithetic and n_samples % 2:
            problems.append(f"n_samples must be even with antithetic pairs, got {n_samples}")
        if adaptive:
            from legx.methods.leg.adaptive import adaptive_problems

            problems.extend(adaptive_problems(target_reliability, max_samples, round_samples, antithetic))
        if not noise_level > 0:
            problems.append(f"noise_level must be > 0, got {noise_level}")
        if grid_size < 2:
            problems.append(f"grid_size must be >= 2, got {grid_size}")
        if batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {batch_size}")
        if channel_mode not in CHANNEL_MODES:
            problems.append(f"channel_mode must be one of {CHANNEL_MODES}, got {channel_mode!r}")
        if score not in SCORES:
            problems.append(f"score must be one of {SCORES}, got {score!r}")
        if draws not in DRAWS:
            problems.append(f"draws must be one of {DRAWS}, got {draws!r}")
        elif draws == "sobol" and 3 * grid_size**2 > SOBOL_MAX_DIMENSION:
            problems.append(f"draws 'sobol' supports grids up to {SOBOL_MAX_DIMENSION} coordinates"
                            f" per draw (3 g^2), got grid_size {grid_size}")
        if fill_batches is not None and not isinstance(fill_batches, bool):
            problems.append(f"fill_batches must be true, false or null (on CUDA only), got {fill_batches!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.n_samples = n_samples if adaptive else int(n_samples)
        self.noise_level = float(noise_level)
        self.grid_size = int(grid_size)
        self.batch_size = int(batch_size)
        self.channel_mode = channel_mode
        self.antithetic = bool(antithetic)
        self.score = score
        self.absolute = bool(absolute)
        self.clip = bool(clip)
        self.seed = int(seed)
        self.target_reliability = float(target_reliability)
        self.max_samples = int(max_samples)
        self.round_samples = int(round_samples)
        self.draws = draws
        self.fill_batches = fill_batches

    @property
    def adaptive(self) -> bool:
        return self.n_samples == "auto"

    def params(self) -> dict:
        """As ``Explainer.params``; a fixed budget leaves out the adaptive budget's parameters,
        which it does not use, and the defaults of ``draws`` and ``fill_batches`` are left out
        (rows written before the options existed keep their params; neither default changes a
        map, and ``fill_batches`` never does)."""
        params = super().params()
        if not self.adaptive:
            for name in ADAPTIVE_PARAMETERS:
                params.pop(name)
        if self.draws == "random":
            params.pop("draws")
        if params.get("fill_batches", False) is None:
            params.pop("fill_batches")
        return params

    @property
    def forwards_per_image(self) -> int:
        """Forwards per image, at most (the cap) for adaptive budgets."""
        samples = self.max_samples if self.adaptive else self.n_samples
        return 3 * samples if self.channel_mode == "separate" else samples

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        return leg_maps(self.sample(model, images, targets), absolute=self.absolute)

    def _draw_noise(
        self, device: torch.device, n_samples: int | None = None, seed: int | None = None,
        sequence_start: int = 0,
    ) -> torch.Tensor:
        """Grid noise for every forward of one image: (forwards, 3, p) on device, for
        ``n_samples`` per channel (default: the explainer's) drawn from ``seed`` (default: its);
        Sobol draws start at point ``sequence_start`` of every group's sequence.

        Rows are ordered by forward index; in ``separate`` mode forward k perturbs channel
        k // n_samples only.
        """
        n_samples = self.n_samples if n_samples is None else n_samples
        seed = self.seed if seed is None else seed
        n_cells = self.grid_size**2
        n_draws = n_samples // 2 if self.antithetic else n_samples
        n_channels = 1 if self.channel_mode == "shared" else 3
        if self.draws == "sobol" and self.channel_mode == "joint":
            # One forward's three channels are coordinates of one point.
            standard = sobol_standard_normal(1, n_draws, 3 * n_cells, seed, sequence_start)
            standard = standard[0].unflatten(1, (3, n_cells)).transpose(0, 1)
        elif self.draws == "sobol":
            standard = sobol_standard_normal(n_channels, n_draws, n_cells, seed, sequence_start)
        else:
            generator = torch.Generator(device=device).manual_seed(seed)
            standard = torch.randn(n_channels, n_draws, n_cells, generator=generator, device=device)
        standard = standard.to(device, torch.float32)
        cholesky = torch.as_tensor(
            grid_operators(self.grid_size).unit_cholesky, dtype=torch.float32, device=device
        )
        draws = self.noise_level * standard @ cholesky.T  # (channels, draws, p) ~ N(0, Sigma)
        if self.antithetic:
            draws = torch.cat([draws, -draws], dim=1)
        if self.channel_mode == "shared":
            return draws[0][:, None, :].expand(-1, 3, -1)
        if self.channel_mode == "joint":
            return draws.transpose(0, 1)
        noise = torch.zeros(3, n_samples, 3, n_cells, device=device)
        for channel in range(3):
            noise[channel, :, channel] = draws[channel]
        return noise.reshape(3 * n_samples, 3, n_cells)

    def _score(
        self, logits: torch.Tensor, target: torch.Tensor, opposite: torch.Tensor | None
    ) -> torch.Tensor:
        logits = logits.float()
        values = logits.softmax(dim=1) if self.score == "prob" else logits
        score = values.gather(1, target[:, None])[:, 0]
        if opposite is not None:
            score = score - values.gather(1, opposite[:, None])[:, 0]
        return score.double()

    @inference_mode
    def sample(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
        opposite_targets: Sequence[int] | torch.Tensor | None = None,
    ) -> LegStatistics:
        """Run the perturbation forwards and return LEG's sufficient statistics.

        Perturbations of consecutive images are packed into the same forward batches, so a
        batch of small images fills the device as well as one large image does.
        """
        from legx.methods.models.inference import input_memory_format

        images = check_images(images)
        device = model_device(model)
        images = images.to(device, torch.float32, non_blocking=True)
        n_images, _, height, width = images.shape
        target, clean_logits = resolve_targets(model, images, targets, self.batch_size)
        opposite = None
        if opposite_targets is not None:
            opposite, _ = resolve_targets(model, images, opposite_targets, self.batch_size)
        clean_score = self._score(clean_logits, target, opposite)
        if self.adaptive:
            from legx.methods.leg.adaptive import sample_adaptive

            return sample_adaptive(self, model, images, target, opposite, clean_score)

        noise = self._draw_noise(device)
        n_stat_channels = 1 if self.channel_mode == "shared" else 3
        forwards = noise.shape[0]
        sums = torch.zeros(n_images, n_stat_channels, noise.shape[-1], dtype=torch.float64, device=device)
        all_responses = torch.empty(n_images, forwards, dtype=torch.float64, device=device)
        g = self.grid_size
        buffer = torch.empty(
            min(self.batch_size, n_images * forwards), 3, height, width, device=device,
            memory_format=input_memory_format(model),
        )
        for part in batches(n_images * forwards, self.batch_size):
            flat = torch.arange(part.start, part.stop, device=device)
            image_index, forward_index = flat // forwards, flat % forwards
            grid_noise = noise[forward_index]
            runs = [
                (image, max(part.start, image * forwards) - part.start,
                 min(part.stop, (image + 1) * forwards) - part.start)
                for image in range(part.start // forwards, (part.stop - 1) // forwards + 1)
            ]
            perturbed = perturb(images, runs, grid_noise.reshape(-1, 3, g, g), buffer[: len(flat)], self.clip)
            scores = self._score(
                model(perturbed),
                target[image_index],
                None if opposite is None else opposite[image_index],
            )
            responses = scores - clean_score[image_index]
            all_responses[image_index, forward_index] = responses
            weighted = responses[:, None, None] * grid_noise[:, :n_stat_channels].double()
            sums.index_add_(0, image_index, weighted)
        leg_covariance, group_leg, n_units = self._uncertainty(all_responses, noise)
        return LegStatistics(
            g_hat=(sums / self.n_samples).cpu().numpy(),
            target=target.cpu().numpy().astype(np.int64),
            clean_score=clean_score.cpu().numpy(),
            grid_size=self.grid_size,
            noise_level=self.noise_level,
            n_forwards=forwards,
            leg_covariance=leg_covariance.cpu().numpy(),
            group_leg=group_leg.cpu().numpy(),
            n_units=n_units,
        )

    def _uncertainty(
        self, responses: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The covariance of the channels' LEG estimates per cell (N, C, C, p), LEG of each of K
        disjoint groups of units (N, K, C, p) and the units per channel, from one call's
        responses (N, forwards) and noise (forwards, 3, p) (see ``unit_sums``)."""
        return unit_sums(responses, noise, self.n_samples, self.channel_mode, self.antithetic,
                         self.grid_size, self.noise_level).finish()
