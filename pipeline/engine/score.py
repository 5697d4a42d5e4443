"""The score stage: faithfulness and localisation metrics of every 'ok' map (an actor pool that
loads the model once; CPU tasks when every metric is model-free)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from legx.methods.metrics import catalogue
from legx.pipeline.engine.explain import images_tensor
from legx.pipeline.engine.finish import finite_or_none
from legx.pipeline.engine.plan import Plan, load_job_model
from legx.pipeline.engine.schema import REGION_SHARE, STAGE_SCHEMA, metric_fields


def needs_model(metrics: tuple[str, ...]) -> bool:
    """Whether any of ``metrics`` runs model forwards (then they need the metrics actor pool)."""
    return catalogue.needs_model(metrics)


class MetricsActor:
    """Scores every 'ok' map with ``legx.methods.metrics.compute.compute_metrics`` (the model loaded once)."""

    def __init__(self, plan: Plan) -> None:
        import torch

        torch.set_num_threads(plan.torch_threads)
        self.plan = plan
        self.device = "cuda" if plan.use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_job_model(plan, self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_batch(batch, self.plan, self.model)


def score_model_free_batch(batch: pa.Table, plan: Plan) -> pa.Table:
    """The metrics stage as CPU tasks when every metric is model-free (no model is loaded; an
    empty module stands in for it, and no forward runs)."""
    import torch

    return score_batch(batch, plan, torch.nn.Identity())


def score_batch(batch: pa.Table, plan: Plan, model) -> pa.Table:
    """Metric columns for every 'ok' row of ``batch``."""
    from legx.methods.metrics.compute import compute_metrics

    records = batch.to_pylist()
    columns = [column for name in plan.metrics for column in catalogue.metric(name).columns]
    scores = {column.name: [None] * len(records) for column in columns}
    localised = bool(catalogue.region_metrics(plan.metrics))
    shares: list[float | None] = [None] * len(records)
    groups: dict[tuple[int, int], list[int]] = {}
    for position, record in enumerate(records):
        if record["status"] == "ok" and record["_image"] is not None:
            groups.setdefault((record["height"], record["width"]), []).append(position)
    size = plan.image_size
    for (height, width), positions in groups.items():
        chosen = [records[p] for p in positions]
        images = images_tensor([r["_image"] for r in chosen], size)
        maps = np.stack([np.asarray(r["saliency"], np.float32).reshape(height, width) for r in chosen])
        masks = None
        if any(r["_mask"] is not None or r["boxes"] is not None for r in chosen):
            masks = np.stack([ground_truth_region(r, size) for r in chosen])
        targets = np.array([r["target"] for r in chosen], dtype=np.int64)
        if localised:
            for position, share in zip(positions, region_shares(masks, len(chosen))):
                shares[position] = finite_or_none(share)
        try:
            values = compute_metrics(model, images, maps, targets, names=list(plan.metrics),
                                     masks=masks, **plan.metric_options)
        except Exception as error:  # noqa: BLE001 - metrics stay null; the map is kept
            for position in positions:
                records[position]["error"] = f"metrics: {type(error).__name__}: {error}"
            continue
        for name, column in values.items():
            for position, value in zip(positions, column):
                scores[name][position] = stored_value(value)
    table = pa.Table.from_pylist(records, schema=STAGE_SCHEMA)
    for field in metric_fields():
        if field.name in scores:
            table = table.append_column(field, pa.array(scores[field.name], field.type))
    if localised:
        table = table.append_column(REGION_SHARE, pa.array(shares, pa.float64()))
    return table


def stored_value(value: np.ndarray | float) -> float | list[float] | None:
    """A metric's value as its column stores it: a score (None where not finite), or a curve
    (None where any point is not finite: a curve of a map that was not scored)."""
    if np.ndim(value) == 0:
        return float(value) if np.isfinite(value) else None
    return [float(point) for point in value] if np.isfinite(value).all() else None


def ground_truth_region(record: dict, size: int) -> np.ndarray:
    """The boolean ground truth (size, size) of one stage row: its mask where it has one, else
    the union of its target's boxes (``target_region``); empty without either."""
    if record["_mask"] is not None:
        return np.frombuffer(record["_mask"], np.uint8).reshape(size, size).astype(bool)
    return target_region(record["boxes"], record["target"], size)


def target_region(boxes: list[dict] | None, target: int | None, size: int) -> np.ndarray:
    """The ground truth of one map: the union of its image's boxes (in the explained image's
    pixels) whose class is the explained one, or unstated; empty (the scores are NaN) where no
    box is left, as when the boxes belong to other classes or the crop cut them all away."""
    from legx.methods.metrics.localisation import boxes_union

    chosen = [[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in boxes or []
              if b["label"] is None or b["label"] == target]
    return boxes_union(np.array(chosen, dtype=np.float64).reshape(-1, 4), size, size)


def region_shares(masks: np.ndarray | None, count: int) -> np.ndarray:
    """The ground-truth region's share of the image per row (NaN without one): the chance level
    of the pointing game and mask energy."""
    from legx.methods.metrics.localisation import region_share

    return np.full(count, np.nan) if masks is None else region_share(masks)
