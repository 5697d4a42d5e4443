"""Model-randomisation sanity check of saliency methods (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018), as the LEG paper runs it (Luo, Barut & Jin, ICCV 2021, sec. 6).

Cascading randomisation: the parameterised layers of a copy of the model are re-initialised one
after another, from the output layer down to the input, cumulatively; after each step the maps
of the same images for the same classes (the trained model's top-1 unless given) are recomputed
and compared with the trained model's maps by Spearman rank correlation over the map cells. A
method whose maps depend on the learned weights shows a correlation that falls as more layers
are randomised; one that stays high explains the input more than the model.

Layers are the modules that own parameters directly, in reverse registration order (for the
usual ``nn.Sequential``-style models, including torchvision's, this is output to input). Each
is re-initialised with its own ``reset_parameters`` (PyTorch's default initialisation; batch
norm also resets its running statistics), under a seed derived from ``seed`` and the layer's
position, without touching the global random state. The reference draws uniform(-0.05, 0.05)
weights instead; both replace the learned weights by ones independent of the data.

Rows are written to ``OUTPUT/sanity/`` as Parquet by ``write_sanity_table``; the report plots
mean correlation per method against the number of randomised layers.

``legx sanity`` (``legx.pipeline.cli.sanity``: same config and flags as ``legx run``, plus
``--images`` and ``--max-layers``) runs it for every configured method on the first images of
the input.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata

from legx.methods.base import Explainer, check_images, model_device, resolve_targets
from legx.methods.lazy_imports import no_grad, torch
from legx.pipeline.engine.storage import StorageOptions, join, resolve, write_bytes_atomic

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig

logger = logging.getLogger(__name__)

SANITY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model_id", pa.string()),
        ("method", pa.string()),
        ("lam", pa.float64()),
        ("layer", pa.string()),
        ("layer_index", pa.int32()),
        ("image_id", pa.string()),
        ("image_index", pa.int32()),
        ("spearman", pa.float64()),
        ("spearman_abs", pa.float64()),
        # Naive UTC, as in the saliency table: zoned timestamps need pytz to reach Python.
        ("created_at", pa.timestamp("us")),
    ]
)


def parameterised_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every module owning parameters, from the output layer to the input."""
    owners = [
        (name or type(module).__name__, module)
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]
    return owners[::-1]


@no_grad
def reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Re-draw the module's own parameters with its default initialisation, seeded, leaving the
    global random state as it was. Modules without ``reset_parameters`` get normal draws with
    each parameter's own standard deviation."""
    device = model_device(module)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for parameter in module.parameters(recurse=False):
            spread = float(parameter.detach().float().std(correction=0))
            parameter.normal_(0.0, spread if spread > 0 else 0.01)


def _ranks(maps: np.ndarray) -> np.ndarray:
    return rankdata(maps.reshape(len(maps), -1), axis=1)


def _row_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows; NaN where a row is constant."""
    first = first - first.mean(axis=1, keepdims=True)
    second = second - second.mean(axis=1, keepdims=True)
    scale = np.sqrt((first**2).sum(axis=1) * (second**2).sum(axis=1))
    products = (first * second).sum(axis=1)
    return np.divide(products, scale, out=np.full(len(first), np.nan), where=scale > 0)


def spearman_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of matching maps (N, ...), float64 (N,); NaN for a constant map."""
    return _row_correlation(_ranks(np.asarray(first)), _ranks(np.asarray(second)))


def _as_map_stack(maps: np.ndarray) -> np.ndarray:
    """(N, M, h, w): explainers return (N, h, w), or (N, L, h, w) for one map per lambda."""
    maps = np.asarray(maps, dtype=np.float64)
    return maps[:, None] if maps.ndim == 3 else maps


def cascading_randomization(
    model: torch.nn.Module,
    images: torch.Tensor,
    explainer: Explainer,
    targets: Sequence[int] | torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_layers: int | None = None,
) -> list[dict]:
    """Rows {method, lam, layer, layer_index, image_index, spearman, spearman_abs}: for k = 1..L
    (``layer_index``), the correlation of each image's map after re-initialising the top k
    parameterised layers (``layer`` names the k-th) with its map on the trained model.
    ``spearman_abs`` compares |maps| (Adebayo et al. report both). ``lam`` is the explainer's
    lambda for multi-map explainers (LEG-TV), else None. ``max_layers`` stops after that many
    layers (deep models have dozens; the top ones matter most). ``model`` is not modified."""
    check_images(images)
    targets, _ = resolve_targets(model, images, targets, batch_size)
    lambdas = list(getattr(explainer, "lambdas", []))
    original = _as_map_stack(explainer.explain(model, images, targets))
    randomised = copy.deepcopy(model).eval()
    rows: list[dict] = []
    layers = parameterised_layers(randomised)[:max_layers]
    for layer_index, (layer, module) in enumerate(layers, start=1):
        reinitialise(module, seed * 100003 + layer_index)
        maps = _as_map_stack(explainer.explain(randomised, images, targets))
        for map_index in range(original.shape[1]):
            signed = spearman_rows(original[:, map_index], maps[:, map_index])
            magnitude = spearman_rows(np.abs(original[:, map_index]), np.abs(maps[:, map_index]))
            lam = lambdas[map_index] if lambdas else None
            for image_index in range(len(images)):
                rows.append(
                    {
                        "method": explainer.name,
                        "lam": None if lam is None else float(lam),
                        "layer": layer,
                        "layer_index": layer_index,
                        "image_index": image_index,
                        "spearman": float(signed[image_index]),
                        "spearman_abs": float(magnitude[image_index]),
                    }
                )
    return rows


def write_sanity_table(
    rows: Sequence[dict],
    output_uri: str,
    run_id: str,
    model_id: str,
    image_ids: Sequence[str] | None = None,
    storage: StorageOptions | None = None,
) -> str:
    """Write rows of ``cascading_randomization`` (possibly of several methods) to
    ``OUTPUT/sanity/<run_id>-<unique>.parquet`` (local or object storage); returns its URI.
    ``image_ids[image_index]`` names the images."""
    import pyarrow.parquet as pq

    created_at = datetime.now(timezone.utc).replace(tzinfo=None)
    columns = {name: [] for name in SANITY_SCHEMA.names}
    for row in rows:
        index = int(row["image_index"])
        values = {
            **row,
            "run_id": run_id,
            "model_id": model_id,
            "image_id": image_ids[index] if image_ids is not None else str(index),
            "created_at": created_at,
        }
        for name in SANITY_SCHEMA.names:
            value = values.get(name)
            if name in ("spearman", "spearman_abs") and value is not None and np.isnan(value):
                value = None
            columns[name].append(value)
    table = pa.table(columns, schema=SANITY_SCHEMA)
    storage = storage or StorageOptions()
    uri = join(output_uri, "sanity", f"{run_id}-{uuid.uuid4().hex[:8]}.parquet")
    _, path = resolve(uri, storage)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    write_bytes_atomic(uri, storage, path, buffer.getvalue().to_pybytes())
    return uri


def load_images(config: JobConfig, count: int) -> tuple[list[str], torch.Tensor]:
    """The first ``count`` decodable images of the job's input, decoded as the job decodes them:
    (image ids, float tensor (N, 3, S, S) in [0, 1])."""
    from legx.pipeline.engine.images import DecodeError, decode_image
    from legx.pipeline.engine.run import ensure_ray
    from legx.pipeline.engine.sources import read_source

    ensure_ray()
    dataset, _ = read_source(config)
    ids, pixels = [], []
    for row in dataset.iter_rows():
        try:
            pixels.append(decode_image(row["data"], config.image_size, config.resize))
        except DecodeError:
            continue
        ids.append(row["image_id"])
        if len(ids) == count:
            break
    if not ids:
        raise ValueError(f"no decodable image in {config.input!r}")
    stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0
    return ids, stacked


def run_sanity(
    config: JobConfig,
    model: torch.nn.Module,
    n_images: int = 4,
    seed: int = 0,
    max_layers: int | None = None,
) -> str:
    """Cascading randomisation of every method in ``config`` on the first ``n_images`` images
    of its input; writes one Parquet file under OUTPUT/sanity/ and returns its URI."""
    from legx import methods

    image_ids, images = load_images(config, n_images)
    rows: list[dict] = []
    for name in config.methods:
        explainer = methods.get_explainer(name, **config.method_params(name))
        logger.info("sanity: %s on %d image(s)", name, len(image_ids))
        rows += cascading_randomization(model, images, explainer, seed=seed, max_layers=max_layers)
    return write_sanity_table(rows, config.output, config.run_id, config.model, image_ids, config.storage)
