"""``legx sanity [CONFIG.yaml]``: the command line of ``legx.pipeline.analysis.sanity`` (same config
and flags as ``legx run``, plus ``--images`` and ``--max-layers``)."""

from __future__ import annotations

import argparse
import sys

from legx.pipeline.cli.run import add_arguments as add_job_arguments
from legx.pipeline.cli.run import job_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument("--images", type=int, default=4, help="images to check (default 4)")
    parser.add_argument("--max-layers", type=int, help="randomise at most this many layers from the top")
    parser.add_argument("--seed", type=int, default=0, help="seed of the re-initialisations")
    parser.add_argument("--device", help="device of the model (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    config = job_config(args)
    if config is None:
        return 2
    import torch

    from legx import methods
    from legx.pipeline.analysis.sanity import run_sanity

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = methods.load_model(config.model, device=device)
    try:
        uri = run_sanity(config, model, args.images, args.seed, args.max_layers)
    except (OSError, ValueError) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print(f"legx: wrote {uri}; 'legx report {config.output}' shows the curves")
    return 0
