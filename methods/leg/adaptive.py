"""Adaptive LEG budgets: sample each image in rounds until its map is reliable enough.

``LEG(n_samples='auto', target_reliability=0.9, max_samples=4096, round_samples=64)`` runs
rounds of ``round_samples`` perturbations per channel (the scheme of a fixed budget: channel
mode, antithetic pairs, clipping, score). After a round an image's map has the statistics of
all its rounds so far, and at a check its predicted reliability
(``legx.methods.leg.uncertainty.reliability``: the Spearman expected between this map and an
independent run's) is computed from them; the image stops at the first check where that
reaches ``target_reliability`` or when ``max_samples`` per channel are spent (then it is
``capped``).

The check runs after every round from the second on: it is a bootstrap of the map, which the
model actor waits for (its cost is in docs/benchmarks/index.md, "Cost of the statistics"). Checking less often was
measured and rejected (``scripts/bench_budgets.py``): scheduled by Spearman-Brown's rounds to
the target, the checks fell 4.3x on resnet18 at target 0.9, but the forwards rose 19%, since a
map then stops up to a step past its first crossing. The estimator is LEG's, as
published: every round's draws are independent N(0, Sigma) draws (with ``draws='sobol'``, the
next points of each group's scrambled sequence, each still N(0, Sigma): ``legx.methods.leg.explainer``), and the
map is the mean of all the terms an image received, so its expectation is that of a fixed budget. The stopping rule
uses the map's own noise, so the reliability at stopping is an estimate that just crossed the
target: on average it is a little optimistic (``scripts/bench_reliability.py`` measures it).

Forward batches stay full while images finish at different times: the rounds waiting for
forwards form one queue, each batch takes ``batch_size`` forwards from its front (the end of one
image's round and the start of another's share a batch), and an image whose round ends is put
back at the end of the queue with its next round. When fewer than ``batch_size`` forwards are
left in the queue (the last images of a call, often one hard image alone), the queue alone
would leave every further batch partial; with ``fill_batches`` the free rows take the next
rounds of the images still running, ahead of their reliability checks (speculative rounds). A
round is added to its image's map only if the stopping rule, checked round by round in order,
asks for it; the rounds queued past an image's stop are dropped, and any forwards already spent
on them are discarded (counted in ``discarded_forwards``, in no map). So every map, its
forwards and its stopping round are those of the plain queue, whatever the batch: on an
accelerator, where a partial batch costs about the time of a full one, the free rows cost
nothing and save the tail's serial rounds; on a CPU every forward costs time, so
``fill_batches=None`` (the default) fills on CUDA only. Round r of every image uses the same
seeded noise (seed and r), so an image's map does not depend on the other images of its call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from legx.methods.lazy_imports import torch
from legx.methods.leg.moments import GROUPS, UnitSums, unit_sums
from legx.methods.leg.perturbation import perturb
from legx.methods.leg.solvers import LegStatistics
from legx.methods.leg.uncertainty import reliability

# Rounds every image runs before its reliability is first checked: a map's first round has too
# few draws per group for its estimate to be trusted to stop on.
MIN_ROUNDS = 2


def adaptive_problems(target_reliability, max_samples, round_samples, antithetic: bool) -> list[str]:
    """Every problem with the adaptive-budget parameters (empty if none)."""
    problems = []
    if isinstance(target_reliability, bool) or not isinstance(target_reliability, (int, float)) \
            or not 0 < target_reliability < 1:
        problems.append(f"target_reliability must be a number in (0, 1), got {target_reliability!r}")
    unit = 2 * GROUPS if antithetic else GROUPS
    round_ok = isinstance(round_samples, int) and not isinstance(round_samples, bool) \
        and round_samples >= unit and round_samples % unit == 0
    if not round_ok:
        problems.append(
            f"round_samples must be a positive multiple of {unit} (each round's independent draws"
            f" split into {GROUPS} equal groups), got {round_samples!r}"
        )
    if isinstance(max_samples, bool) or not isinstance(max_samples, int):
        problems.append(f"max_samples must be an integer, got {max_samples!r}")
    elif round_ok and (max_samples < MIN_ROUNDS * round_samples or max_samples % round_samples):
        problems.append(
            f"max_samples must be a multiple of round_samples ({round_samples}) and at least"
            f" {MIN_ROUNDS} rounds ({MIN_ROUNDS * round_samples}), got {max_samples}"
        )
    return problems


def _round_seed(seed: int, round_index: int) -> int:
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class _Image:
    """What one image has accumulated: sum_i y_i z_i per channel, the unit sums, its rounds."""

    response_sum: torch.Tensor
    sums: UnitSums | None = None
    rounds: int = 0
    queued: int = 0
    done: bool = False
    capped: bool = False
    reliability: float = float("nan")


class _Rounds:
    """The queue of (image, round) waiting for forwards, and each round's responses."""

    def __init__(self, explainer, n_images: int, device: torch.device) -> None:
        self.explainer = explainer
        self.device = device
        samples = explainer.round_samples
        self.forwards = 3 * samples if explainer.channel_mode == "separate" else samples
        self.queue = deque((image, 0, 0) for image in range(n_images))  # (image, round, next)
        self.responses: dict[tuple[int, int], torch.Tensor] = {}
        self.noise: dict[int, torch.Tensor] = {}

    def noise_of(self, round_index: int) -> torch.Tensor:
        """Round r's noise: independent seeded draws, or for Sobol draws the next points of
        every group's sequence (round r of group k continues its first r rounds' points)."""
        if round_index not in self.noise:
            explainer = self.explainer
            if explainer.draws == "sobol":
                units = explainer.round_samples // 2 if explainer.antithetic else explainer.round_samples
                noise = explainer._draw_noise(self.device, explainer.round_samples, explainer.seed,
                                              sequence_start=round_index * units // GROUPS)
            else:
                noise = explainer._draw_noise(self.device, explainer.round_samples,
                                              _round_seed(explainer.seed, round_index))
            self.noise[round_index] = noise
        return self.noise[round_index]

    def pending(self) -> int:
        """Forwards waiting in the queue."""
        return sum(self.forwards - start for _, _, start in self.queue)

    def fill(self, batch_size: int, states: list[_Image], max_rounds: int) -> None:
        """Queue speculative rounds (module docstring) until a batch's worth of forwards waits
        or no running image has a round left under the cap; the least-advanced images first."""
        pending = self.pending()
        while pending < batch_size:
            running = [i for i, state in enumerate(states) if not state.done and state.queued + 1 < max_rounds]
            if not running:
                return
            image = min(running, key=lambda i: states[i].queued)
            states[image].queued += 1
            self.queue.append((image, states[image].queued, 0))
            pending += self.forwards

    def drop(self, image: int) -> None:
        """Remove an image's queued rounds and their partial responses."""
        dropped = {r for i, r, _ in self.queue if i == image} | {r for i, r in self.responses if i == image}
        self.queue = deque(item for item in self.queue if item[0] != image)
        for round_index in dropped:
            self.responses.pop((image, round_index), None)
            self.release(round_index)

    def next_batch(self, batch_size: int) -> list[tuple[int, int, int, int, int]]:
        """(image, round, start, stop, batch row) chunks filling up to ``batch_size`` rows."""
        chunks, filled = [], 0
        while self.queue and filled < batch_size:
            image, round_index, start = self.queue.popleft()
            stop = min(self.forwards, start + batch_size - filled)
            chunks.append((image, round_index, start, stop, filled))
            filled += stop - start
            if stop < self.forwards:
                self.queue.appendleft((image, round_index, stop))
        return chunks

    def release(self, round_index: int) -> None:
        """Drop a round's noise once no image waits for it."""
        waiting = any(r == round_index for _, r, _ in self.queue)
        running = any(r == round_index for _, r in self.responses)
        if not waiting and not running:
            self.noise.pop(round_index, None)


def sample_adaptive(explainer, model, images, target, opposite, clean_score) -> LegStatistics:
    """LEG statistics of ``images`` with an adaptive budget (module docstring), with per image
    ``image_forwards`` (the forwards it cost) and ``capped``."""
    from legx.methods.models.inference import input_memory_format

    device = images.device
    n_images, _, height, width = images.shape
    n_channels = 1 if explainer.channel_mode == "shared" else 3
    n_cells = explainer.grid_size**2
    max_rounds = explainer.max_samples // explainer.round_samples
    states = [_Image(torch.zeros(n_channels, n_cells, dtype=torch.float64, device=device))
              for _ in range(n_images)]
    rounds = _Rounds(explainer, n_images, device)
    g = explainer.grid_size
    fill = explainer.fill_batches if explainer.fill_batches is not None else device.type == "cuda"
    rows = explainer.batch_size if fill else min(explainer.batch_size, n_images * rounds.forwards)
    buffer = torch.empty(rows, 3, height, width, device=device, memory_format=input_memory_format(model))
    forwards_run = 0
    while rounds.queue:
        if fill:
            rounds.fill(explainer.batch_size, states, max_rounds)
        chunks = rounds.next_batch(explainer.batch_size)
        filled = chunks[-1][4] + chunks[-1][3] - chunks[-1][2]
        forwards_run += filled
        grid_noise = torch.cat([rounds.noise_of(r)[start:stop] for _, r, start, stop, _ in chunks])
        runs = [(image, row, row + stop - start) for image, _, start, stop, row in chunks]
        image_index = torch.cat([torch.full((stop - start,), image, device=device)
                                 for image, _, start, stop, _ in chunks])
        perturbed = perturb(images, runs, grid_noise.reshape(-1, 3, g, g), buffer[:filled], explainer.clip)
        scores = explainer._score(model(perturbed), target[image_index],
                                  None if opposite is None else opposite[image_index])
        responses = scores - clean_score[image_index]
        for image, round_index, start, stop, row in chunks:
            key = (image, round_index)
            if states[image].done:  # a speculative round past the image's stop
                continue
            if key not in rounds.responses:
                rounds.responses[key] = torch.empty(rounds.forwards, dtype=torch.float64, device=device)
            rounds.responses[key][start:stop] = responses[row : row + stop - start]
            if stop == rounds.forwards:
                _finish_round(explainer, states[image], rounds, image, round_index, max_rounds)
                if states[image].done:
                    rounds.drop(image)
    return _statistics(explainer, states, target, clean_score, rounds.forwards, forwards_run)


def _finish_round(explainer, state: _Image, rounds: _Rounds, image: int, round_index: int,
                  max_rounds: int) -> None:
    responses = rounds.responses.pop((image, round_index))
    noise = rounds.noise_of(round_index)
    n_channels = state.response_sum.shape[0]
    state.response_sum += (responses[:, None, None] * noise[:, :n_channels].double()).sum(dim=0)
    round_sums = unit_sums(responses[None], noise, explainer.round_samples, explainer.channel_mode,
                           explainer.antithetic, explainer.grid_size, explainer.noise_level, GROUPS)
    state.sums = round_sums if state.sums is None else state.sums.add(round_sums)
    state.rounds += 1
    rounds.release(round_index)
    if state.rounds >= MIN_ROUNDS:
        state.reliability = _reliability(explainer, state)
        if state.reliability >= explainer.target_reliability:
            state.done = True
        elif state.rounds >= max_rounds:
            state.done, state.capped = True, True
    if not state.done and state.queued == round_index:
        state.queued += 1
        rounds.queue.append((image, state.queued, 0))


def _reliability(explainer, state: _Image) -> float:
    covariance, group_leg, _ = state.sums.finish()
    samples = state.rounds * explainer.round_samples
    stats = LegStatistics(
        g_hat=(state.response_sum / samples).cpu().numpy()[None],
        target=np.zeros(1, np.int64), clean_score=np.zeros(1), grid_size=explainer.grid_size,
        noise_level=explainer.noise_level, n_forwards=0,
        leg_covariance=covariance.cpu().numpy(), group_leg=group_leg.cpu().numpy(),
    )
    return float(reliability(stats, explainer.absolute)[0])


def _statistics(explainer, states: list[_Image], target, clean_score, round_forwards: int,
                forwards_run: int) -> LegStatistics:
    finished = [state.sums.finish() for state in states]
    image_forwards = np.array([s.rounds * round_forwards for s in states], dtype=np.int64)
    return LegStatistics(
        g_hat=np.stack([(s.response_sum / (s.rounds * explainer.round_samples)).cpu().numpy()
                        for s in states]),
        target=target.cpu().numpy().astype(np.int64),
        clean_score=clean_score.cpu().numpy(),
        grid_size=explainer.grid_size,
        noise_level=explainer.noise_level,
        n_forwards=explainer.forwards_per_image,
        leg_covariance=np.concatenate([covariance.cpu().numpy() for covariance, _, _ in finished]),
        group_leg=np.concatenate([groups.cpu().numpy() for _, groups, _ in finished]),
        image_forwards=image_forwards,
        capped=np.array([s.capped for s in states], dtype=bool),
        discarded_forwards=forwards_run - int(image_forwards.sum()),
    )
