"""requirements/lock.txt is the tested set: it must agree with pyproject.toml, and the README's
set-up commands and CI must install through it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lock_dependencies", REPO / "scripts" / "lock_dependencies.py")
lock_dependencies = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_dependencies)

PYPROJECT = """
[project]
dependencies = ["numpy>=2.4", "ray[data]>=2.60"]
[project.optional-dependencies]
test = ["pytest>=9"]
"""


def test_an_agreeing_lock_has_no_unmet_requirement():
    lock = "numpy==2.4.6\n    # via legx\nray==2.60.0\npytest==9.2.0\n"
    assert lock_dependencies.unmet_requirements(PYPROJECT, lock) == []


def test_a_missing_pin_and_a_pin_below_the_floor_are_both_named():
    problems = lock_dependencies.unmet_requirements(PYPROJECT, "numpy==2.3.0\nray==2.60.0\n")
    assert len(problems) == 2
    assert "numpy>=2.4" in problems[0] and "numpy==2.3.0" in problems[0]
    assert "pytest>=9" in problems[1] and "not in the lock" in problems[1]


def test_lock_lines_with_markers_and_extras_parse_to_their_versions():
    pins = lock_dependencies.locked_versions("Ray[data]==2.60.0 ; python_version >= '3.11'\n# numpy==1.0\n")
    assert pins == {"ray": "2.60.0"}


def test_the_committed_lock_pins_every_declared_requirement():
    problems = lock_dependencies.unmet_requirements(
        lock_dependencies.PYPROJECT.read_text(), lock_dependencies.LOCK.read_text()
    )
    assert problems == []


def test_the_committed_lock_is_what_pyproject_resolves_to():
    """The refresh script's --check re-resolves with uv (needs the package index) and diffs."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lock_dependencies.py"), "--check"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches pyproject.toml" in result.stdout


def _readme_commands() -> list[str]:
    section = REPO.joinpath("README.md").read_text().split("## Set up and go", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and "pip install" in line]


def test_both_readme_commands_install_through_the_lock_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert re.search(r"pip install (-c|--constraint) requirements/lock\.txt ", command), command
    run_command, test_command = commands
    assert run_command.endswith("&& legx run")
    ci = REPO.joinpath(".ci", "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must run the README's test command verbatim"
    assert re.search(r"python3 -m venv (\S+)", ci), ".ci/run must install into a fresh virtual environment"
