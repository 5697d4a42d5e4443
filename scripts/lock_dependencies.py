"""Refresh or check requirements/lock.txt, the tested set of every dependency legx installs.

The README's set-up commands install with ``pip install -c requirements/lock.txt ...``: the
lock is a pip constraints file, so pip takes exactly these releases and has nothing to
backtrack through. It is resolved by uv (``uv pip compile``) for the tested platform, CPython
3.11 on x86_64 Linux, from pyproject.toml's dependencies and its ``test`` extra.

    python scripts/lock_dependencies.py             # re-resolve, keeping every pin that still fits
    python scripts/lock_dependencies.py --upgrade   # move every pin to its newest release
    python scripts/lock_dependencies.py --upgrade-package ray   # move one (repeatable)
    python scripts/lock_dependencies.py --check     # exit 1 if pyproject.toml and the lock disagree

``--check`` does two things: offline, every requirement in pyproject.toml must be pinned in
the lock at a release its specifier admits; then uv re-resolves into a scratch copy of the lock
(preferring the lock's own pins, so an in-sync lock reproduces itself) and any line that moves is
a disagreement. The second step needs the package index. After a refresh, run the tests: the
lock is only "tested" once the suite has passed on it.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "lock.txt"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
EXTRAS = ("test",)
REFRESH_COMMAND = "python scripts/lock_dependencies.py"


def uv_compile(output: Path, extra_args: list[str] = ()) -> None:
    """Resolve pyproject.toml into ``output``; an existing ``output`` supplies preferred pins."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("lock_dependencies: uv is not installed; `pip install uv` (it is in the test extra)")
    command = [
        uv, "pip", "compile", str(PYPROJECT.relative_to(ROOT)),
        *(f"--extra={extra}" for extra in EXTRAS),
        f"--python-version={PYTHON_VERSION}",
        f"--python-platform={PLATFORM}",
        "--no-emit-index-url",
        "--no-emit-find-links",
        f"--custom-compile-command={REFRESH_COMMAND}",
        "--quiet",
        f"--output-file={output}",
        *extra_args,
    ]
    subprocess.run(command, cwd=ROOT, check=True)


def locked_versions(lock_text: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock (comments ignored)."""
    pins = {}
    for line in lock_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def declared_requirements(pyproject_text: str) -> list[Requirement]:
    """pyproject.toml's dependencies plus the extras the lock covers."""
    project = tomllib.loads(pyproject_text)["project"]
    declared = list(project["dependencies"])
    for extra in EXTRAS:
        declared += project["optional-dependencies"][extra]
    return [Requirement(text) for text in declared]


def unmet_requirements(pyproject_text: str, lock_text: str) -> list[str]:
    """The requirements of pyproject.toml that the lock does not pin at an admitted release."""
    pins = locked_versions(lock_text)
    problems = []
    for requirement in declared_requirements(pyproject_text):
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is required by pyproject.toml but not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement} is required by pyproject.toml; the lock pins {name}=={pins[name]}")
    return problems


def check() -> int:
    problems = unmet_requirements(PYPROJECT.read_text(), LOCK.read_text())
    if problems:
        print("requirements/lock.txt disagrees with pyproject.toml:", *problems, sep="\n  ")
        print(f"Refresh it with `{REFRESH_COMMAND}`, then run the tests.")
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "lock.txt"
        fresh.write_text(LOCK.read_text())
        uv_compile(fresh)
        moved = [
            line for line in difflib.unified_diff(
                LOCK.read_text().splitlines(), fresh.read_text().splitlines(),
                "requirements/lock.txt", "re-resolved", lineterm="", n=0,
            )
        ]
    if moved:
        print("requirements/lock.txt is not what pyproject.toml resolves to:", *moved, sep="\n")
        print(f"Refresh it with `{REFRESH_COMMAND}`, then run the tests.")
        return 1
    print(f"requirements/lock.txt matches pyproject.toml ({len(locked_versions(LOCK.read_text()))} pins)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the lock is out of date")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to its newest admitted release")
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                        help="move one package's pin (repeatable)")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    LOCK.parent.mkdir(exist_ok=True)
    extra = ["--upgrade"] if args.upgrade else []
    for name in args.upgrade_package:
        extra += ["--upgrade-package", name]
    uv_compile(LOCK, extra)
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(locked_versions(LOCK.read_text()))} pins); now run the tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
