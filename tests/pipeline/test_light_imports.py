"""The analysis commands and config validation import neither torch nor ray.

An analyst on a laptop runs ``legx query``, ``legx report`` (without ``--model``), ``legx show``
and ``legx compare`` on a job's output, and ``legx run`` checks a config before Ray starts: none
of these needs the model, so none may pay torch's or Ray's import. Each runs in a fresh
interpreter (this test process has imported both), in-process through ``legx.pipeline.cli.main``,
which then prints the heavy modules it finds in ``sys.modules``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from legx import methods
from legx.pipeline.engine.manifest import write_manifest
from legx.pipeline.engine.schema import STAGE_SCHEMA
from legx.pipeline.engine.sink import ParquetWriter
from legx.pipeline.engine.storage import StorageOptions

HEAVY = ("torch", "ray", "captum", "torchvision")
REPOSITORY = Path(methods.__file__).resolve().parent.parent

# Prints the exit status and the heavy modules left in sys.modules by `legx ARGV`.
CLI_PROBE = """
import json, sys
from legx.pipeline.cli.main import main
status = main(json.loads(sys.argv[1]))
print(json.dumps({"status": status, "loaded": [name for name in %r if name in sys.modules]}))
""" % (HEAVY,)

# The same after validating a config of every method, every metric and the options that
# load code of their own (LEG's adaptive budget, a reduced precision).
CONFIG_PROBE = """
import json, sys
from legx import methods
from legx.methods.metrics.catalogue import metric_names
from legx.pipeline.engine.config import load_config
config = load_config(None, ["input=images", "methods=[" + ",".join(methods.available()) + "]",
                            "metrics=[" + ",".join(metric_names()) + "]", "metric_options={auc_steps: 20}",
                            "precision=bf16", "leg.n_samples=auto", "leg-tv.lambdas=[0.1, 0.3]"])
assert config.methods == methods.available(), config.methods
print(json.dumps({"status": 0, "loaded": [name for name in %r if name in sys.modules]}))
""" % (HEAVY,)


def _probe(code: str, *args: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _write_output(root: Path, name: str) -> str:
    """A one-row output (map, metric, manifest), written without Ray, over the image root/a.png."""
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:4] = (250, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    (root / "a.png").write_bytes(buffer.getvalue())
    output = str(root / name)
    row = {"image_id": "a.png", "source_uri": str(root / "a.png"), "target": 1, "target_score": 0.7,
           "method": "leg", "params": "{}", "height": 4, "width": 4,
           "saliency": np.linspace(-1, 1, 16, dtype=np.float32), "status": "ok", "elapsed_s": 0.1,
           "gini": 0.3}
    writer = ParquetWriter(output, StorageOptions(), "r1", "demo", anchor=("leg", None))
    writer.write(pa.Table.from_pylist([row], schema=STAGE_SCHEMA))
    write_manifest(output, StorageOptions(), "r1", {"config": {"image_size": 8, "resize": "stretch"}})
    return output


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("light")
    return root, _write_output(root, "a"), _write_output(root, "b")


COMMANDS = {
    "query": lambda a, b, root: ["query", a, "select 1"],
    "report": lambda a, b, root: ["report", a, "-o", str(root / "report.html")],
    "show": lambda a, b, root: ["show", a, "a.png", "-o", str(root / "show.png")],
    "compare": lambda a, b, root: ["compare", a, b, "-o", str(root / "comparison")],
    # A config error ends `legx run` before Ray starts: the whole check runs without torch.
    "run with a bad config": lambda a, b, root: ["run", "--input", str(root), "--methods", "leg,lime",
                                                 "--set", "leg.n_samples=0"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_analysis_commands_import_neither_torch_nor_ray(outputs, command):
    root, output_a, output_b = outputs
    argv = COMMANDS[command](output_a, output_b, root)
    result = _probe(CLI_PROBE, json.dumps(argv), cwd=root)
    assert result["status"] == (2 if command.startswith("run") else 0)
    assert result["loaded"] == [], f"legx {command} imported {result['loaded']}"


def test_config_validation_of_every_method_imports_neither_torch_nor_ray(tmp_path):
    result = _probe(CONFIG_PROBE, cwd=tmp_path)
    assert result["loaded"] == []
