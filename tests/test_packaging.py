"""The installed distribution: one top-level package, ``legx``, that works away from the repository.

The wheel is built from a clean copy of this checkout (setuptools, no network; a build folder
left in the checkout could carry modules that no longer exist into the wheel) and installed into
a scratch folder; a fresh interpreter started outside the repository imports it from there, so
nothing can be found through the source tree by accident.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        "legx-output", "legx-demo-data", "site"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(source)], check=True, cwd=out)
    (built,) = out.glob("legx-*.whl")
    return built


def test_the_wheel_installs_legx_and_nothing_else_at_the_top_level(wheel):
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/", 1)[0] for name in archive.namelist()}
    dist_info = {name for name in top if name.endswith(".dist-info")}
    assert top - dist_info == {"legx"}
    assert [name.split("-")[0] for name in dist_info] == ["legx"]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"legx/__init__.py", "legx/methods/__init__.py", "legx/methods/leg/solvers.py",
            "legx/pipeline/engine/run.py", "legx/methods/assets/demo_cnn.pt"} <= names


def test_the_installed_wheel_loads_the_demo_model_and_the_command_line(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    script = (
        "import legx, legx.methods, legx.pipeline.cli.main\n"
        "from legx.methods.models.loading import load_model\n"
        "model = load_model('demo', device='cpu')\n"
        "print(legx.__file__)\n"
        "print(legx.methods.models.loading.__file__)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    assert all(line.startswith(str(site)) for line in completed.stdout.split())
