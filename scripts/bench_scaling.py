"""Does the job scale with model actors, and does an actor's memory stay flat as data grows?

    python scripts/bench_scaling.py [--images 64] [--samples 128]

Runs the pipeline (local Ray, bundled demo model, LEG on an 8 x 8 grid) on demo images:

  throughput   forwards/s with 1 and with 2 model actors (0.5 CPU each, one torch thread), same
               images, end to end and from the first model call to the last (the job's fixed
               start-up left out): on 2 cores the second actor should add most of a core's worth;
  memory       peak resident memory of the model actor processes (VmHWM from /proc, Linux) for
               a dataset 4x larger: Ray Data streams blocks, so it should not grow with the data.

Prints a Markdown table. Memory is read from /proc while the job runs, so it needs Linux.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx.pipeline.engine.config import load_config  # noqa: E402
from legx.pipeline.demo.data import write_demo_dataset  # noqa: E402
from legx.pipeline.engine.run import run_job  # noqa: E402

ACTOR_TITLE = b"ExplainActor"


def actor_peak_rss_mib() -> float:
    """Largest peak resident set (VmHWM) among live processes titled after the model actor."""
    peak = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if ACTOR_TITLE not in handle.read():
                    continue
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


class PeakWatcher(threading.Thread):
    """Polls actor_peak_rss_mib() until stopped; keeps the maximum seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, actor_peak_rss_mib())


def run(images: Path, output: Path, actors: int, samples: int, run_id: str):
    config = load_config(None, [
        f"input={images}", f"output={output}", "model=demo", "methods=[leg]", "image_size=64",
        f"leg.n_samples={samples}", "leg.grid_size=8", "leg.batch_size=512", f"actors={actors}",
        "actor_cpus=0.5", f"run_id={run_id}",
    ])
    watcher = PeakWatcher()
    watcher.start()
    summary = run_job(config)
    watcher.done.set()
    watcher.join()
    return summary, watcher.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--samples", type=int, default=128, help="LEG n_samples per channel")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="legx-scaling-"))
    small, large = work / "small", work / "large"
    write_demo_dataset(small, args.images, seed=11)
    write_demo_dataset(large, 4 * args.images, seed=11)

    rows = []
    for actors, images in ((1, small), (2, small), (1, large)):
        summary, peak = run(images, work / f"out-{actors}-{images.name}", actors, args.samples,
                            f"scaling-{actors}-{images.name}")
        rows.append(f"| {actors} | {summary.images} | {summary.forwards_per_s:,.0f} | "
                    f"{summary.serving_forwards_per_s:,.0f} | {peak:,.0f} |")
        print(rows[-1], flush=True)
    print(f"\nLEG, {args.samples} samples per channel, 8 x 8 grid, demo CNN 64 px, actors of 0.5 CPU\n")
    print("| model actors | images | forwards/s | forwards/s, first model call to last | peak RSS per actor (MiB) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
