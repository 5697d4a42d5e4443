"""``legx run``: one explanation job from the embedded default, a config file or flags."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from legx.pipeline.engine.config import ConfigError, load_config

logger = logging.getLogger(__name__)

DEMO_DATA_DIR = "./legx-demo-data"
DEMO_COUNT = 48
DEMO_IMAGE_SIZE = 64
# The embedded default: finishes in a few minutes on 2 CPU cores. The demo images are 64 px, so
# LEG works on an 8 x 8 grid of 8 px blocks: its estimate has p = 64 unknowns per channel, and
# 342 samples per channel (1026 forwards, channels perturbed separately) keep the Monte-Carlo
# error small (on a 16 x 16 grid, p = 256, the same budget leaves maps dominated by noise). LEG
# and LEG-TV share the forwards; the localisation metrics need no forwards.
DEMO_SAMPLING: dict[str, Any] = {"n_samples": 342, "grid_size": 8, "batch_size": 512}
DEMO_CONFIG: dict[str, Any] = {
    "input": DEMO_DATA_DIR,
    "output": "./legx-output",
    "model": "demo",
    "methods": ["leg", "leg-tv"],
    "image_size": DEMO_IMAGE_SIZE,
    "batch_size": 8,
    # The embedded default runs on this machine, where its one model actor does nearly all the
    # work: torch may use every core (the other stages' tasks are short).
    "actor_threads": os.cpu_count() or 1,
    "leg": dict(DEMO_SAMPLING),
    "leg-tv": {**DEMO_SAMPLING, "lambdas": [0.1, 0.3]},
    "metrics": ["pointing_game", "mask_energy", "gini"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="job config YAML (local path or URI)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for nesting, YAML value), e.g. leg.n_samples=500")
    parser.add_argument("--input", help="images: folder, WebDataset shards or Parquet (path or s3://)")
    parser.add_argument("--output", help="where the saliency table and run manifests go")
    parser.add_argument("--model", help="model spec: demo, torchvision:NAME[@WEIGHTS], or a checkpoint path/URI")
    parser.add_argument("--methods", help="comma-separated method names, e.g. leg,leg-tv")
    parser.add_argument("--samples", type=_samples, metavar="N|auto",
                        help="n_samples of every selected method that has one (auto: adaptive budget)")
    parser.add_argument("--run-id", help="run id (rerun an id to resume it)")
    parser.add_argument("--limit", type=int, help="explain at most this many images")


def _samples(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    overrides = []
    for flag, key in (("input", "input"), ("output", "output"), ("model", "model"),
                      ("run_id", "run_id"), ("limit", "limit")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={_yaml_string(value)}")
    if args.methods:
        overrides.append(f"methods=[{args.methods}]")
    return overrides


def _yaml_string(value: Any) -> str:
    return value if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _samples_overrides(config_methods: list[str], samples: int | str) -> list[str]:
    from legx import methods

    return [
        f"{name}.n_samples={samples}"
        for name in config_methods
        if "n_samples" in methods.get_explainer(name).params()
    ]


def resolve_config(args: argparse.Namespace):
    """The job config of the command line; the embedded default when neither a file nor
    --input is given."""
    embedded = args.config is None and args.input is None
    base = dict(DEMO_CONFIG) if embedded else {}
    overrides = list(args.overrides) + _flag_overrides(args)
    config = load_config(args.config, overrides, base=base)
    if args.samples is not None:
        config = load_config(args.config, overrides + _samples_overrides(config.methods, args.samples), base=base)
    return config, embedded


def ensure_demo_data(directory: str) -> None:
    """Generate the demo images once; later runs reuse them."""
    from legx.pipeline.demo.data import write_demo_dataset
    from legx.pipeline.engine.sources import ANNOTATIONS_FILE

    if os.path.exists(os.path.join(directory, ANNOTATIONS_FILE)):
        return
    logger.info("writing %d demo images to %s", DEMO_COUNT, directory)
    write_demo_dataset(directory, DEMO_COUNT, seed=0, image_size=DEMO_IMAGE_SIZE)


def job_config(args: argparse.Namespace):
    """The job config of the command line (``resolve_config``) with the embedded default's demo
    data written; None, after printing the config errors, when the config is invalid."""
    try:
        config, embedded = resolve_config(args)
    except ConfigError as error:
        print(f"legx: {error}", file=sys.stderr)
        return None
    if embedded and config.input == DEMO_DATA_DIR:
        ensure_demo_data(DEMO_DATA_DIR)
    return config


def _quiet_ray() -> None:
    """``legx -q``: Ray Data's INFO lines and progress bars off too (they do not go through legx's
    loggers; Ray's own driver logger follows legx's in ``ensure_ray``); warnings still show,
    except Ray Data's notice that the progress bars are off, which is what was asked for."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    config = job_config(args)
    if config is None:
        return 2

    from legx.pipeline.engine.run import run_job
    from legx.pipeline.engine.sources import SourceError
    from legx.pipeline.engine.storage_retry import StorageError
    from legx.pipeline.engine.manifest import RUNS_DIR
    from legx.pipeline.engine.sink import FILE_INFIX, SALIENCY_DIR
    from legx.pipeline.engine.storage import join

    if getattr(args, "verbosity", 0) < 0:
        _quiet_ray()
    logger.info("run %s: %s -> %s (model %s; methods %s)", config.run_id, config.input, config.output,
                config.model, ", ".join(config.methods))
    logger.debug("config: %s", json.dumps(config.public_dict(), default=str))
    try:
        summary = run_job(config)
    except (ConfigError, SourceError) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 2
    except StorageError as error:
        # One line: the operation, the object, the cause (the run manifest records it too).
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print()
    print(f"legx: run {summary.run_id} finished in {summary.wall_s:.1f} s")
    print(f"  this invocation: {summary.images} images, {summary.rows} rows "
          f"({summary.ok} ok, {summary.errors} errors)"
          + (f", {summary.skipped_rows} rows already written" if summary.skipped_rows else ""))
    if summary.resources:
        print(f"  resources:  {summary.resources}")
    if summary.storage_retries or summary.superseded_rows:
        print(f"  healed:     {summary.storage_retries} storage operations retried after transient faults, "
              f"{summary.superseded_rows} retryable error rows replaced by this invocation's rows")
    if summary.solver_fallbacks:
        print(f"  solver:     {summary.solver_fallbacks} LEG-TV programs left by the batched solver "
              "to the exact one (Clarabel)")
    print(f"  throughput: {summary.images_per_s:.2f} images/s, {summary.forwards_per_s:,.0f} forwards/s")
    if summary.model_window_s:
        print(f"  model:      first call {summary.startup_s:.1f} s after the start; actors busy "
              f"{summary.model_busy_s:.1f} s in {summary.model_window_s:.1f} s from the first call "
              f"to the last, {summary.serving_forwards_per_s:,.0f} forwards/s there")
    reading = summary.top1
    if reading is not None:
        low, high = reading["interval_95"]
        print(f"  top-1:      {reading['correct']} of {reading['labelled']} labelled images "
              f"({reading['accuracy']:.2f}, 95% interval {low:.2f}-{high:.2f}; chance "
              f"{reading['chance']:.2f} = 1/{reading['classes']})")
    if summary.ground_truth is not None:
        print(f"  ground truth: {ground_truth_line(summary.ground_truth)}")
    if summary.total_rows is None:
        print("  run totals: not read back (see the warning above); every row of this invocation is written")
    else:
        print(f"  run totals: {summary.total_images} images, {summary.total_rows} rows "
              f"({summary.total_ok} ok, {summary.total_errors} errors)")
    print(f"  results:  {join(config.output, SALIENCY_DIR, config.run_id + FILE_INFIX + '*.parquet')}")
    print(f"  manifest: {join(config.output, RUNS_DIR, config.run_id + '.json')}")
    print(f"  try:      legx query {config.output} \"select method, lam, status, count(*) from saliency "
          f"group by all order by all\"")
    for warning in summary.warnings:
        print(f"legx: {warning}", file=sys.stderr, flush=True)
    return 0


def ground_truth_line(counts: dict[str, Any]) -> str:
    """The summary's line on what the images got from the annotations and what their boxes became."""
    missing = counts["maps_without_target_box"]
    line = (f"{counts['images_with_label']} images with a label, {counts['images_with_boxes']} with boxes"
            f" ({counts['boxes_in_crop']} boxes in the crop, {counts['boxes_cropped_away']} cropped away)")
    read = counts.get("read")
    if read:
        line += (f"; reading {read['format']}: {read['boxes_clipped']} boxes clipped to their image,"
                 f" {read['boxes_dropped']} dropped, {read['objects_not_synset']} objects not a synset")
    if missing["every_box_cropped_away"] or missing["boxes_of_other_classes_only"]:
        line += (f"; maps without a box of their class (pointing game and mask energy NaN):"
                 f" {missing['every_box_cropped_away']} every box cropped away,"
                 f" {missing['boxes_of_other_classes_only']} boxes of other classes only")
    return line
