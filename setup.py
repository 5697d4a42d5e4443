"""Package list for setuptools (everything else is in pyproject.toml).

The repository keeps ``methods/`` and ``pipeline/`` at its top level (the product brief fixes
them); installed, they are subpackages of ``legx``. pyproject.toml maps the directories; this
file names every subpackage under its installed name, found from the folders so that a new
subpackage needs no edit here.
"""

from setuptools import find_packages, setup

setup(packages=["legx", *(f"legx.{name}" for name in find_packages(include=["methods*", "pipeline*"]))])
