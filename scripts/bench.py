"""legx benchmark: the forward limit, LEG sampling, LEG-TV solves, the pipeline and the peers,
measured side by side in one run on the same model, images and machine.

    python scripts/bench.py --quick                    # demo model, < 3 minutes on 2 cores
    python scripts/bench.py --arch resnet18 --size 224 # a torchvision architecture
    python scripts/bench.py --quick --precision bf16       # autocast; --no-channels-last, --compile

Sections (each prints a line; the last line is one JSON object with every number):
  bare       the limit: bare model forwards/s at the batch size in use
  leg        LEG sampling forwards/s at the same batch size (perturbations made on the device,
             packed across images) and its efficiency against bare; the reference design's
             one-forward-per-perturbation loop as the baseline it replaces
  lp         LEG-TV solve time per LP at 28 x 28 (one channel, lambda 0.1, statistics of the
             model under test): sparse vs dense formulation, the batched solver (default; one
             program per call here, so without its batching) vs Clarabel vs HiGHS
  peers      captum KernelShap and Lime per image at LEG's forward budget, same features
  pipeline   legx end to end (local Ray, LEG + LEG-TV, Parquet written): forwards/s, images/s,
             and the same from the first model call to the end of the last (the job's fixed
             start-up and drain left out: what a long job approaches); on a CPU-only machine also
             the finish steps' CPU seconds per image (every program the job solves, the
             reliability's included) and the efficiency bound they set, since there the finish
             tasks and the forwards share the cores; with ``--solvers A,B`` the finish steps
             and the pipeline run once per LEG-TV solver, side by side; ``none`` among them runs
             LEG alone, without LEG-TV: the job with no programs to solve, what LEG-TV's cost
             is measured against; ``--pipeline-rounds N`` alternates them N times and reports
             each one's medians (this machine's speed drifts by several percent between runs)
Bare and LEG timings alternate in several rounds and report medians, so that a load spike on a
shared machine hits both alike. ``--arch`` uses random weights: throughput does not depend on
them, and nothing is downloaded (the pipeline reads them from a temporary weights file).

``--precision``, ``--channels-last`` (on by default, as in the job config) and ``--compile`` set
up the model with ``legx.methods.models.inference.prepare_model`` for every section (and the job's config
for the pipeline); with any of them on, the leg section also prints the LEG map's error against
the plain float32 model at the same seed, beside the float32 seed-to-seed difference (the Monte
Carlo noise it is to be judged by).
``--actor-threads`` sets the pipeline actor's torch threads; efficiency is taken against the
bare rate at that thread count, measured before and again after the pipeline (the mean of the
two: the machine's speed can drift during the run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx.methods.models.inference import PRECISIONS, input_memory_format, prepare_model  # noqa: E402
from legx.methods.leg.explainer import LEG  # noqa: E402
from legx.methods.leg.perturbation import grid_to_image  # noqa: E402
from legx.methods.leg.solvers import solve_tv  # noqa: E402
from legx.pipeline.engine.allocator import retain_freed_memory  # noqa: E402

# The ``--solvers`` entry that runs the pipeline without LEG-TV.
LEG_ALONE = "none"


def build_model(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    """The float32 model and the job's model spec for it (a torchvision architecture's random
    weights go to a temporary file that the pipeline loads)."""
    from legx.methods.models.loading import load_model

    if args.arch == "demo":
        return load_model("demo", device=args.device), "demo"
    import torchvision

    from legx.methods.models.loading import NormalizedClassifier

    network = torchvision.models.get_model(args.arch, weights=None)
    weights = Path(tempfile.mkdtemp(prefix="legx-bench-weights-")) / f"{args.arch}.pth"
    torch.save(network.state_dict(), weights)
    return NormalizedClassifier(network).eval().to(args.device), f"torchvision:{args.arch}@{weights}"


def timed(function, repeats: int) -> float:
    """Median wall seconds of ``function()`` over ``repeats`` calls, after one warm-up call."""
    function()
    durations = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def bare_forward(model, args, threads: int):
    """One bare forward of a batch on ``threads`` torch threads. The limit gets its input in the
    layout the model runs in, so the copy into it is not counted against the bare model (LEG
    builds its batches in that layout)."""
    batch = torch.rand(args.batch_size, 3, args.size, args.size, device=args.device).contiguous(
        memory_format=input_memory_format(model)
    )

    def forward():
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                model(batch)
        finally:
            torch.set_num_threads(previous)

    return forward


def bare_rate(model, args, threads: int) -> float:
    """Median bare forwards/s over ``args.rounds`` rounds."""
    forward = bare_forward(model, args, threads)
    return statistics.median(args.batch_size / timed(forward, args.repeats) for _ in range(args.rounds))


def bench_forwards(model, images, args, reference_model) -> dict:
    leg = LEG(n_samples=args.samples, grid_size=args.grid_size, batch_size=args.batch_size)
    leg_forwards = images.shape[0] * leg.forwards_per_image + images.shape[0]  # + clean pass
    threads = torch.get_num_threads()
    bare = bare_forward(model, args, threads)
    bare_on_actor_threads = bare_forward(model, args, args.actor_threads)

    bare_rates, leg_rates, actor_rates = [], [], []
    for _ in range(args.rounds):
        bare_rates.append(args.batch_size / timed(bare, args.repeats))
        leg_rates.append(leg_forwards / timed(lambda: leg.sample(model, images), 1))
        if args.actor_threads != threads:
            actor_rates.append(args.batch_size / timed(bare_on_actor_threads, args.repeats))
    bare_rate, leg_rate = statistics.median(bare_rates), statistics.median(leg_rates)
    bare_actor_threads = statistics.median(actor_rates) if actor_rates else bare_rate
    print(f"bare      {bare_rate:10.1f} forwards/s (batch {args.batch_size}, {threads} threads)")
    print(f"leg       {leg_rate:10.1f} forwards/s  efficiency {leg_rate / bare_rate:.3f}")
    print(f"bare      {bare_actor_threads:10.1f} forwards/s on {args.actor_threads} thread(s) "
          f"(what the pipeline's model actor gets)")
    accuracy = {}
    if model is not reference_model:
        maps = leg.explain(model, images)
        exact = leg.explain(reference_model, images)
        other_seed = LEG(n_samples=args.samples, grid_size=args.grid_size, batch_size=args.batch_size,
                         seed=1).explain(reference_model, images)
        accuracy = {
            "leg_map_error_vs_fp32": round(float(np.linalg.norm(maps - exact) / np.linalg.norm(exact)), 4),
            "leg_fp32_seed_to_seed": round(float(np.linalg.norm(other_seed - exact) / np.linalg.norm(exact)), 4),
        }
        print(f"leg       map error vs float32 {accuracy['leg_map_error_vs_fp32']:.3f} "
              f"(float32 seed to seed: {accuracy['leg_fp32_seed_to_seed']:.3f})")

    reference = LEG(n_samples=args.reference_samples, grid_size=args.grid_size, batch_size=1,
                    channel_mode="separate", antithetic=False)
    one = images[:1]
    reference_rate = (reference.forwards_per_image + 1) / timed(lambda: reference.sample(model, one), 1)
    print(f"reference {reference_rate:10.1f} forwards/s (one forward per perturbation)")
    leg_s_per_image = leg.forwards_per_image / leg_rate
    return {
        "bare_forwards_per_s": round(bare_rate, 1),
        "bare_forwards_per_s_actor_threads": round(bare_actor_threads, 1),
        "leg_forwards_per_s": round(leg_rate, 1),
        "leg_efficiency": round(leg_rate / bare_rate, 3),
        "reference_loop_forwards_per_s": round(reference_rate, 1),
        "leg_speedup_over_reference_loop": round(leg_rate / reference_rate, 2),
        "leg_s_per_image": round(leg_s_per_image, 4),
        "leg_forwards_per_image": leg.forwards_per_image,
        **accuracy,
    }


def bench_lp(model, images, args) -> dict:
    stats = LEG(n_samples=args.samples, grid_size=args.lp_grid, batch_size=args.batch_size).sample(
        model, images[: args.lp_images]
    )
    results = {}
    for formulation, solver, repeats in (
        ("sparse", "BATCHED", args.lp_images),
        ("sparse", "HIGHS", args.lp_images),
        ("sparse", "CLARABEL", args.lp_images),
        ("dense", "HIGHS", args.dense_repeats),
        ("dense", "CLARABEL", args.dense_repeats),
    ):
        if repeats == 0:
            continue
        if formulation == "sparse":  # builds the cached program; a dense solve takes as long
            solve_tv(stats.g_hat[0, :1], args.lp_grid, stats.noise_level, [0.1], solver, formulation)
        times = []
        for image in range(repeats):
            g_hat = stats.g_hat[image % len(stats), :1]  # one channel: one LP
            (solution,) = solve_tv(g_hat, args.lp_grid, stats.noise_level, [0.1], solver, formulation)
            if solution.status != "ok":
                raise RuntimeError(f"{formulation}/{solver}: {solution.error}")
            times.append(solution.solve_s)
        median = statistics.median(times)
        results[f"lp_{formulation}_{solver.lower()}_median_s"] = round(median, 4)
        print(f"lp        {formulation:6s} {solver:8s} median {median:8.3f} s per LP "
              f"({args.lp_grid}x{args.lp_grid}, {repeats} solves)")
    results["lp_median_s"] = results["lp_sparse_batched_median_s"]  # the default solver
    return results


def bench_peers(model, images, args) -> dict:
    from captum.attr import KernelShap, Lime

    grid = args.grid_size
    cells = torch.arange(grid * grid, device=args.device).reshape(grid, grid)
    feature_mask = grid_to_image(cells, args.size, args.size)[None, None].expand(1, 3, -1, -1)
    budget = LEG(n_samples=args.samples, grid_size=grid).forwards_per_image
    one = images[:1]
    with torch.inference_mode():
        target = int(model(one).argmax())
    results = {}
    for name, method in (("kernelshap", KernelShap(model)), ("lime", Lime(model))):
        def run():
            method.attribute(one, target=target, feature_mask=feature_mask, n_samples=budget,
                             perturbations_per_eval=args.batch_size, baselines=0.0)
        seconds = timed(run, 1)
        results[f"{name}_s_per_image"] = round(seconds, 4)
        print(f"peer      captum {name:10s} {seconds:8.3f} s per image ({budget} forwards)")
    return results


def bench_lp_share(model, images, args, solver: str) -> dict:
    """CPU seconds per image of the job's finish steps at the pipeline's settings (one core):
    LEG's closed form and LEG-TV's programs, each with its standard errors and reliability, so
    every program the job solves (a LEG-TV map's own and its reliability's bootstrap) is counted,
    on all the benchmark's images in one call, as the job's finish tasks take a model call's
    images (``batch_size``, 8 by default). This is the CPU work that shares this machine's
    cores with the forwards when there is no accelerator."""
    from legx.methods.leg.explainer import LEG
    from legx.methods.leg.tv import LEGTV

    sampling = dict(n_samples=args.samples, grid_size=args.grid_size, batch_size=args.batch_size)
    leg = LEG(**sampling)
    legtv = None if solver == LEG_ALONE else LEGTV(solver=solver, **sampling)
    stats = (leg if legtv is None else legtv).sample(model, images)
    # A worker's first call builds the cached programs and loads the compiled solver.
    leg.finish(stats[0])
    if legtv is not None:
        legtv.finish(stats[0])
    started = time.process_time()
    if legtv is not None:
        legtv.finish(stats)
    leg.finish(stats)
    seconds = (time.process_time() - started) / len(stats)
    what = "LEG alone" if legtv is None else (
        f"LEG + LEG-TV at lambdas {list(legtv.lambdas)}, with reliability, {solver}")
    print(f"solve     {seconds:10.3f} CPU-s per image ({what}, {args.grid_size}x{args.grid_size}, one core)")
    return {"solve_s_per_image": round(seconds, 4)}


def bench_pipeline(args, solver: str) -> dict:
    from legx.pipeline.engine.config import load_config
    from legx.pipeline.demo.data import write_demo_dataset
    from legx.pipeline.engine.run import run_job

    work = Path(tempfile.mkdtemp(prefix="legx-bench-"))
    write_demo_dataset(work / "images", count=args.pipeline_images, seed=123, image_size=args.size)
    overrides = [
        f"input={work / 'images'}",
        f"output={work / 'output'}",
        f"model={args.model_spec}",
        f"precision={args.precision}",
        f"channels_last={str(args.channels_last).lower()}",
        f"compile={str(args.compile).lower()}",
        f"actor_threads={args.actor_threads}",
        "methods=[leg]" if solver == LEG_ALONE else "methods=[leg,leg-tv]",
        f"image_size={args.size}",
        f"leg.n_samples={args.samples}",
        f"leg.grid_size={args.grid_size}",
        f"leg.batch_size={args.batch_size}",
        f"leg-tv.n_samples={args.samples}",
        f"leg-tv.grid_size={args.grid_size}",
        f"leg-tv.batch_size={args.batch_size}",
    ]
    if solver != LEG_ALONE:
        overrides.append(f"leg-tv.solver={solver}")
    summary = run_job(load_config(None, overrides))
    print(f"pipeline  {summary.forwards_per_s:10.1f} forwards/s  {summary.images_per_s:.2f} images/s "
          f"({summary.images} images, {summary.ok} ok rows, {summary.errors} error rows, "
          f"{summary.wall_s:.1f} s)")
    print(f"pipeline  {summary.serving_forwards_per_s:10.1f} forwards/s from the first model call to "
          f"the last ({summary.model_window_s:.1f} s; the first began {summary.startup_s:.1f} s "
          f"after the start, the last ended {summary.wall_s - summary.startup_s - summary.model_window_s:.1f} s "
          f"before the end)")
    return {
        "pipeline_forwards_per_s": round(summary.forwards_per_s, 1),
        "pipeline_images_per_s": round(summary.images_per_s, 3),
        "pipeline_wall_s": round(summary.wall_s, 2),
        "pipeline_images": summary.images,
        "pipeline_forwards": summary.forwards,
        "pipeline_startup_s": summary.startup_s,
        "pipeline_model_window_s": summary.model_window_s,
        "pipeline_model_busy_s": summary.model_busy_s,
        "pipeline_serving_forwards_per_s": round(summary.serving_forwards_per_s, 1),
        "pipeline_solver_fallbacks": summary.solver_fallbacks,
    }


def bench_solver_pipeline(model, images, args, solver: str, bare_all_cores: float | None,
                          bare_actor_threads: float | None) -> dict:
    """The finish steps' CPU seconds (CPU only) and the pipeline with LEG-TV's ``solver`` (LEG
    alone for ``LEG_ALONE``); with the bare rates measured, the efficiencies against them."""
    results = {"solver": solver}
    if args.device == "cpu":
        results.update(bench_lp_share(model, images, args, solver))
    results.update(bench_pipeline(args, solver))
    if bare_actor_threads is None:
        return results
    # The job's one model actor runs torch on --actor-threads threads: its limit is the bare
    # rate at that thread count. This machine's speed drifts by several percent over minutes,
    # so the limit is measured again after the pipeline and the two measurements, which
    # bracket it, are averaged.
    after = bare_rate(model, args, args.actor_threads)
    limit = (bare_actor_threads + after) / 2
    print(f"bare      {after:10.1f} forwards/s on {args.actor_threads} thread(s), after the "
          f"pipeline; efficiency {results['pipeline_forwards_per_s'] / limit:.3f} against "
          f"the mean of before and after")
    results["bare_forwards_per_s_actor_threads_after"] = round(after, 1)
    results["efficiency"] = round(results["pipeline_forwards_per_s"] / limit, 3)
    results["serving_efficiency"] = round(results["pipeline_serving_forwards_per_s"] / limit, 3)
    line = (f"pipeline  efficiency {results['efficiency']:.3f} end to end, "
            f"{results['serving_efficiency']:.3f} from the first model call to the last")
    if "solve_s_per_image" in results:
        # Without an accelerator the solves run on the forward's cores: even a perfect
        # scheduler then needs the forward time plus the solves' CPU time over the cores.
        forward_s = results["pipeline_forwards"] / limit
        solve_s = results["pipeline_images"] * results["solve_s_per_image"] / os.cpu_count()
        results["cpu_bound_efficiency"] = round(forward_s / (forward_s + solve_s), 3)
        line += (f"; {results['cpu_bound_efficiency']:.3f} is the most any schedule reaches "
                 f"with the solves on the same {os.cpu_count()} cores")
    print(line)
    results["efficiency_vs_all_cores"] = round(results["pipeline_forwards_per_s"] / bare_all_cores, 3)
    return results


def medians(runs: list[dict]) -> dict:
    """One run's results, or the median of each number over several runs of the same settings."""
    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int) and not isinstance(value, bool):
            merged[key] = statistics.median_low(run[key] for run in runs)
        elif isinstance(value, float):
            merged[key] = round(statistics.median(run[key] for run in runs), 4)
    merged["rounds"] = len(runs)
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets: under 3 minutes on 2 cores")
    parser.add_argument("--arch", default="demo", help="'demo' or a torchvision architecture (random weights)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 64 demo, 224 otherwise)")
    parser.add_argument("--grid-size", type=int, default=None, help="LEG grid (default 16 demo, 28 otherwise)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None, help="LEG n_samples per image")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--lp-grid", type=int, default=28)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: leg,lp,peers,pipeline")
    parser.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS))
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC layout (default on, as in the job config)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--actor-threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of the pipeline's actor (default: as many as the bare model uses)")
    parser.add_argument("--solvers", default="BATCHED",
                        help="LEG-TV solvers of the finish-step and pipeline sections, comma-separated "
                             f"(the first one's numbers are the top-level ones); {LEG_ALONE!r} runs LEG "
                             "alone, the job without LEG-TV's programs")
    parser.add_argument("--pipeline-rounds", type=int, default=1,
                        help="rounds of the solvers' pipeline runs, alternated; each number is the "
                             "median over the rounds")
    parser.add_argument("--pipeline-images", type=int, default=None,
                        help="images of the pipeline run (default 64 demo / 8 otherwise; 100 / 24 without --quick)")
    args = parser.parse_args(argv)
    if args.pipeline_rounds < 1:
        parser.error(f"--pipeline-rounds must be at least 1, got {args.pipeline_rounds}")

    demo = args.arch == "demo"
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.size = args.size or (64 if demo else 224)
    args.grid_size = args.grid_size or (16 if demo else 28)
    args.batch_size = args.batch_size or (256 if demo else 64)
    quick = args.quick
    args.samples = args.samples or ((256 if quick else 1000) if demo else (64 if quick else 500))
    args.images = args.images or (8 if demo else 2)
    args.rounds = 3 if quick else 5
    args.repeats = 3 if quick else 10
    args.reference_samples = 32 if quick else 200
    args.lp_images = 5 if quick else 20
    args.dense_repeats = 1 if quick else 3
    args.pipeline_images = args.pipeline_images or ((64 if quick else 100) if demo else (8 if quick else 24))
    skip = set(filter(None, args.skip.split(",")))

    # As the pipeline's model actors do: every in-process number is then like the actor's.
    retained = retain_freed_memory()
    torch.manual_seed(0)
    reference_model, args.model_spec = build_model(args)
    model = prepare_model(reference_model, args.precision, args.channels_last, args.compile)
    images = torch.rand(args.images, 3, args.size, args.size, device=args.device)
    results = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "arch": args.arch, "size": args.size, "grid_size": args.grid_size,
        "batch_size": args.batch_size, "samples": args.samples, "threads": torch.get_num_threads(),
        "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile,
        "actor_threads": args.actor_threads, "retain_freed_memory": retained,
    }
    print(f"# {results['machine']}; {args.arch} {args.size}px, grid {args.grid_size}, "
          f"batch {args.batch_size}, n_samples {args.samples}")
    if "leg" not in skip:
        results.update(bench_forwards(model, images, args, reference_model))
    if "lp" not in skip:
        results.update(bench_lp(model, images, args))
    if "peers" not in skip:
        results.update(bench_peers(model, images, args))
    if "pipeline" not in skip:
        solvers = [LEG_ALONE if name.strip().lower() == LEG_ALONE else name.strip()
                   for name in args.solvers.split(",") if name.strip()]
        rounds: dict[str, list[dict]] = {solver: [] for solver in solvers}
        for round_number in range(args.pipeline_rounds):
            for solver in solvers:
                print(f"# LEG-TV solver {solver}" + (f", round {round_number + 1}" if args.pipeline_rounds > 1 else ""))
                rounds[solver].append(bench_solver_pipeline(
                    model, images, args, solver, results.get("bare_forwards_per_s"),
                    results.get("bare_forwards_per_s_actor_threads")))
        for position, solver in enumerate(solvers):
            measured = medians(rounds[solver])
            if args.pipeline_rounds > 1 and "efficiency" in measured:
                print(f"# {solver}: median efficiency {measured['efficiency']:.3f} end to end, "
                      f"{measured['serving_efficiency']:.3f} serving over {args.pipeline_rounds} rounds")
            results.setdefault("by_solver", {})[solver] = measured
            if position == 0:
                results.update(measured)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
