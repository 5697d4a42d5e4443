"""Every registered method through the explainer contract of ``legx.methods.base``: its declared
shape, what ``explain`` returns, parameters that rebuild it, a seed that fixes its maps, and for a
sampled method a finish step that runs without torch and gives the maps ``explain`` gives."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from legx import methods
from legx.methods.base import Explainer, SampledExplainer
from legx.methods.sampled import FinishedMap, load_finisher

SIZE = 32
# Budgets small enough for a test: every registered method needs one here.
TINY = {
    "leg": {"n_samples": 8, "grid_size": 4},
    "leg-tv": {"n_samples": 8, "grid_size": 4, "lambdas": [0.1, 0.3]},
    "meaningful-perturbation": {"n_iterations": 3},
    "cnn-perturbation": {"n_iterations": 3},
    "lime": {"n_samples": 16, "n_segments": 8},
    "kernel-shap": {"n_samples": 16, "n_segments": 8},
    "partition-shap": {"max_evals": 20},
    "grad-cam": {},
    "guided-grad-cam": {},
    "expected-gradients": {"n_samples": 4},
}
REGISTERED = methods.available()


@pytest.fixture(scope="module")
def model():
    return methods.load_model("demo", device="cpu").eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def explained(model, images):
    """Each method's maps of ``images``, computed once for the checks that read them."""
    cache = {}

    def maps_of(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = methods.get_explainer(name, **TINY[name]).explain(model, images)
        return cache[name]

    return maps_of


def test_every_registered_method_has_a_tiny_budget_here():
    assert sorted(TINY) == REGISTERED


@pytest.mark.parametrize("name", REGISTERED)
def test_the_shape_is_declared_by_the_class(name):
    explainer = methods.get_explainer(name, **TINY[name])
    assert isinstance(explainer, Explainer)
    outputs = explainer.outputs()
    assert outputs and len(set(outputs)) == len(outputs)
    if isinstance(explainer, SampledExplainer):
        assert callable(load_finisher(explainer.finisher))
        assert set(explainer.finish_params) <= set(explainer.params())
        assert not set(explainer.finish_params) & set(explainer.sampling_params())
    else:
        assert outputs == [None]


@pytest.mark.parametrize("name", REGISTERED)
def test_explain_returns_finite_float32_maps_one_per_output(name, explained):
    maps = explained(name)
    outputs = methods.get_explainer(name, **TINY[name]).outputs()
    assert maps.dtype == np.float32 and np.isfinite(maps).all()
    if outputs == [None]:
        assert maps.ndim == 3 and maps.shape[0] == 2
    else:
        assert maps.ndim == 4 and maps.shape[:2] == (2, len(outputs))


@pytest.mark.parametrize("name", REGISTERED)
def test_params_are_json_and_rebuild_the_explainer(name):
    params = methods.get_explainer(name, **TINY[name]).params()
    rebuilt = methods.get_explainer(name, **json.loads(json.dumps(params)))
    assert rebuilt.params() == params
    for key, value in TINY[name].items():
        assert params[key] == value


@pytest.mark.parametrize("name", [n for n in REGISTERED if "seed" in methods.get_explainer(n).params()])
def test_a_seed_fixes_the_maps(name, model, images, explained):
    again = methods.get_explainer(name, **TINY[name]).explain(model, images)
    np.testing.assert_array_equal(again, explained(name))


SAMPLED = [n for n in REGISTERED if isinstance(methods.get_explainer(n), SampledExplainer)]


@pytest.mark.parametrize("name", SAMPLED)
def test_sample_then_finish_gives_the_maps_of_explain(name, model, images, explained):
    explainer = methods.get_explainer(name, **TINY[name])
    stats = explainer.sample(model, images)
    assert len(stats) == 2 and stats.forwards_per_image().shape == (2,)
    finished = explainer.finish(stats)
    assert [[item.output for item in per_image] for per_image in finished] == [explainer.outputs()] * 2
    items = [item for per_image in finished for item in per_image]
    assert all(isinstance(item, FinishedMap) and item.error is None for item in items)
    maps = np.stack([np.stack([item.saliency for item in per_image]) for per_image in finished])
    np.testing.assert_allclose(maps.reshape(explained(name).shape), explained(name), rtol=1e-6, atol=1e-9)
    # The job finishes each image's statistics on its own row.
    (alone,) = explainer.finish(pickle.loads(pickle.dumps(stats[1])))
    np.testing.assert_allclose(np.stack([item.saliency for item in alone]), maps[1], rtol=1e-6, atol=1e-9)


def test_the_finish_steps_run_without_torch(model, images, tmp_path):
    """The finish stage's workers never import torch: load each sampled method's finish step and
    run it on pickled statistics in a fresh process (one for all, to keep the test short), then
    look for torch in it."""
    jobs = []
    for name in SAMPLED:
        explainer = methods.get_explainer(name, **TINY[name])
        path = tmp_path / f"{name}.pickle"
        path.write_bytes(pickle.dumps(explainer.sample(model, images[:1])))
        jobs.append((explainer.finisher, str(path), explainer.params()))
    code = (
        "import json, pickle, sys\n"
        "from legx.methods.sampled import load_finisher\n"
        f"for finisher, path, params in json.loads({json.dumps(jobs)!r}):\n"
        "    finished = load_finisher(finisher)(pickle.loads(open(path, 'rb').read()), params)\n"
        "    print(len(finished[0]), end=' ')\n"
        "print(sorted(name for name in ('torch', 'torchvision') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outputs = [len(methods.get_explainer(name, **TINY[name]).outputs()) for name in SAMPLED]
    assert result.stdout.split() == [*map(str, outputs), "[]"]


def test_a_finisher_is_named_module_colon_function_and_a_finished_map_is_a_map_or_an_error():
    with pytest.raises(ValueError, match="module:function"):
        load_finisher("legx.methods.leg.finish")
    with pytest.raises(ValueError, match="either a saliency map or an error"):
        FinishedMap(0.1, np.zeros((2, 2), np.float32), 0.0, error="solve failed")
    with pytest.raises(ValueError, match="either a saliency map or an error"):
        FinishedMap(0.1, None, 0.0)
