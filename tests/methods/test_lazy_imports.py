"""legx.methods.lazy_imports: a module imported on first use, never a stand-in in sys.modules, and
the torch modes as decorators that take effect when the function runs."""

from __future__ import annotations

import pickle
import subprocess
import sys

import torch

from legx.methods.lazy_imports import LazyModule, inference_mode, no_grad

FIRST_USE = """
import sys
from legx.methods.lazy_imports import LazyModule
colorsys = LazyModule("colorsys")
before = "colorsys" in sys.modules
hue = colorsys.rgb_to_hsv(0.0, 0.0, 1.0)[0]
print(before, "colorsys" in sys.modules, hue)
"""


def test_the_module_is_imported_on_the_first_attribute_access_only():
    result = subprocess.run([sys.executable, "-c", FIRST_USE], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": ":".join(sys.path)})
    assert result.stdout.split() == ["False", "True", str(2 / 3)]


def test_a_pickled_stand_in_is_a_stand_in_for_the_same_module():
    restored = pickle.loads(pickle.dumps(LazyModule("math")))
    assert isinstance(restored, LazyModule) and restored.pi == 3.141592653589793


def test_decorators_run_the_function_in_the_torch_mode():
    weight = torch.ones(2, requires_grad=True)

    @no_grad
    def product_without_gradients(x):
        return x * weight

    @inference_mode
    def product_in_inference_mode(x):
        assert torch.is_inference_mode_enabled()
        return x * weight

    assert not product_without_gradients(torch.ones(2)).requires_grad
    assert product_in_inference_mode(torch.ones(2)).is_inference()
    assert (torch.ones(2) * weight).requires_grad
