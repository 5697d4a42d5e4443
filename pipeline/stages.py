"""The job's Ray Data stages, each a pyarrow Table -> pyarrow Table function or actor.

    decode   CPU tasks     bytes -> uint8 image at the job's size (+ ground truth), or an error
    explain  actor pool    model loaded once per actor; LEG-family methods run their forwards
                           (``sample``) and ship the statistics, other methods return maps
    solve    CPU tasks     LEG closed form and LEG-TV linear programs from the statistics
    metrics  actor pool    (only when metrics are configured) faithfulness/localisation scores
    write    CPU tasks     Parquet files of the output schema (see ``pipeline.sink``)

Every image leaves the explain stage with one row per expected output (method, and lambda for
methods with ``lambdas``); an image that failed earlier gets error rows with the reason, so
nothing is dropped.
"""

from __future__ import annotations

import inspect
import json
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

import methods
from methods.metric_names import LOCALISATION_METRICS
from pipeline.decode import DecodeError, decode_image, fit_box, fit_mask, image_digest
from pipeline.sink import REGION_SHARE, output_schema
from pipeline.storage import StorageOptions

DECODED_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("label", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("decode_s", pa.float64()),
        ("_image", pa.binary()),
        ("_mask", pa.binary()),
        ("_box", pa.list_(pa.float64())),
    ]
)

# Rows between the explain stage and the sink: the output columns the stages fill (typed as the
# output table types them), plus internal ones (leading underscore) that the sink drops.
# _model_s/_model_start/_model_end time one model call (seconds, epoch start and end) and sit on
# the first row of that call only, as _forwards counts an image's forwards on one row: summed or
# min/maxed downstream, each call counts once (see ``ONCE_PER_CALL``). _labelled/_correct count
# the call's images that carry a label and those whose clean top-1 class is that label, and
# _classes is the model's number of outputs, on the same first row.
_OUTPUT_FIELDS = {output_field.name: output_field for output_field in output_schema()}
STAGE_SCHEMA = pa.schema(
    [
        _OUTPUT_FIELDS[name]
        for name in (
            "image_id", "source_uri", "label", "target", "target_score", "model_id", "method",
            "lam", "params", "height", "width", "saliency", "saliency_se", "reliability",
            "n_forwards", "capped", "status", "error", "elapsed_s",
        )
    ]
    + [
        ("_forwards", pa.int64()),
        ("_model_s", pa.float64()),
        ("_model_start", pa.float64()),
        ("_model_end", pa.float64()),
        ("_labelled", pa.int64()),
        ("_correct", pa.int64()),
        ("_classes", pa.int64()),
        ("_stats", pa.binary()),
        ("_pending", pa.string()),
        ("_image", pa.binary()),
        ("_mask", pa.binary()),
        ("_box", pa.list_(pa.float64())),
    ]
)


@dataclass(frozen=True)
class MethodSpec:
    """One requested method: its registry name, constructor parameters and its outputs per
    image (one per lambda for methods with ``lambdas``, else one with lam None)."""

    name: str
    params: dict[str, Any]
    lambdas: tuple[float, ...] | None

    @property
    def outputs(self) -> list[float | None]:
        return list(self.lambdas) if self.lambdas else [None]

    def build(self):
        return methods.get_explainer(self.name, **self.params)


@dataclass(frozen=True)
class Plan:
    """What the stages need from the config, in a picklable form."""

    model: str
    specs: tuple[MethodSpec, ...]
    image_size: int
    resize: str
    target: str
    use_gpu: bool
    actor_cpus: float
    torch_threads: int = 1
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    metrics: tuple[str, ...] = ()
    metric_options: dict[str, Any] = field(default_factory=dict)
    storage: StorageOptions = field(default_factory=StorageOptions)

    def expected_keys(self, image_id: str) -> list[tuple[str, str, float | None]]:
        return [(image_id, spec.name, lam) for spec in self.specs for lam in spec.outputs]


def load_job_model(plan: Plan, device: str):
    """The job's model on ``device``, prepared for inference as the plan asks (precision,
    channels_last, compile); weights in object storage are read with the job's storage options."""
    from methods.inference import prepare_model
    from methods.models import load_model

    spec = plan.model
    weights = spec.partition("@")[2] if spec.startswith("torchvision:") else spec
    options = None
    if weights.startswith("s3://"):
        endpoint = plan.storage.resolved_endpoint()
        options = {"anon": plan.storage.anonymous}
        if endpoint:
            options["endpoint_url"] = endpoint
        if plan.storage.region:
            options["client_kwargs"] = {"region_name": plan.storage.region}
    elif weights.startswith("gs://") and plan.storage.anonymous:
        options = {"token": "anon"}
    model = load_model(spec, device=device, storage_options=options)
    return prepare_model(model, plan.precision, plan.channels_last, plan.compile)


def method_spec(name: str, params: dict[str, Any]) -> MethodSpec:
    """The spec of a method, with its full parameter set as the explainer reports it."""
    explainer = methods.get_explainer(name, **params)
    full = json.loads(json.dumps(explainer.params()))
    lambdas = full.get("lambdas")
    return MethodSpec(name, full, tuple(float(v) for v in lambdas) if lambdas is not None else None)


def _is_leg_family(explainer) -> bool:
    from methods.leg import LEG

    return isinstance(explainer, LEG)


def _sampling_key(explainer) -> str:
    """LEG's sampling parameters: two LEG-family methods with equal keys share forwards."""
    from methods.leg import LEG

    names = set(inspect.signature(LEG.__init__).parameters) - {"self", "absolute"}
    return json.dumps({k: v for k, v in explainer.params().items() if k in names}, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# decode


def decode_batch(
    batch: pa.Table,
    plan: Plan,
    annotations_ref=None,
    skip_ref=None,
    repeated_ref=None,
) -> pa.Table:
    """Source rows -> DECODED_SCHEMA rows; images already complete (resume) are dropped, and
    the later occurrences of a repeated id (``pipeline.sources.repeated_ids``) become error
    rows under their unique names."""
    skip = _shared(skip_ref) if skip_ref is not None else frozenset()
    repeated = _shared(repeated_ref) if repeated_ref is not None else {}
    annotations = _annotation_index(annotations_ref) if annotations_ref is not None else {}
    rows = []
    ids = batch.column("image_id").to_pylist()
    uris = batch.column("source_uri").to_pylist()
    labels = batch.column("label").to_pylist()
    data = batch.column("data")
    for position, image_id in enumerate(ids):
        duplicate = None
        if uris[position] in repeated:
            duplicate = repeated[uris[position]].get(image_digest(data[position].as_py()))
            if duplicate is not None:
                image_id = duplicate[0]
        if image_id in skip:
            continue
        started = time.perf_counter()
        row = {
            "image_id": image_id,
            "source_uri": uris[position],
            "label": labels[position],
            "status": "ok",
            "error": None,
            "_image": None,
            "_mask": None,
            "_box": None,
        }
        if duplicate is not None:
            row["status"], row["error"] = "error", duplicate[1]
            row["decode_s"] = time.perf_counter() - started
            rows.append(row)
            continue
        annotation = annotations.get(image_id)
        if annotation is not None and annotation.get("label") is not None:
            row["label"] = int(annotation["label"])
        try:
            encoded = data[position].as_py() or b""
            row["_image"] = decode_image(encoded, plan.image_size, plan.resize).tobytes()
        except DecodeError as error:
            row["status"], row["error"] = "error", f"decode: {error}"
        if row["status"] == "ok" and annotation is not None:
            row["_mask"], row["_box"] = _fit_annotation(annotation, plan)
        row["decode_s"] = time.perf_counter() - started
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def _fit_annotation(annotation: dict[str, Any], plan: Plan) -> tuple[bytes | None, list | None]:
    height, width = annotation.get("height"), annotation.get("width")
    mask, box = annotation.get("mask"), annotation.get("box")
    fitted_mask = fitted_box = None
    if mask is not None and height and width and len(mask) == height * width:
        array = np.asarray(mask, dtype=np.uint8).reshape(height, width)
        fitted_mask = fit_mask(array, plan.image_size, plan.resize).tobytes()
    if box is not None and height and width and len(box) == 4:
        fitted_box = fit_box(np.asarray(box), height, width, plan.image_size, plan.resize).tolist()
    return fitted_mask, fitted_box


_SHARED_CACHE: dict[str, Any] = {}


def _shared(ref):
    """A broadcast object, fetched once per worker process."""
    import ray

    key = ref.hex()
    if key not in _SHARED_CACHE:
        _SHARED_CACHE[key] = ray.get(ref)
    return _SHARED_CACHE[key]


def _annotation_index(ref) -> dict[str, dict[str, Any]]:
    key = ref.hex() + ":index"
    if key not in _SHARED_CACHE:
        table = _shared(ref)
        _SHARED_CACHE[key] = {row["image_id"]: row for row in table.to_pylist()}
    return _SHARED_CACHE[key]


# ---------------------------------------------------------------------------------------------
# explain


def _error_rows(base: dict[str, Any], spec: MethodSpec, error: str, params_text: str) -> list[dict]:
    return [
        {**base, "method": spec.name, "lam": lam, "params": params_text, "status": "error", "error": error}
        for lam in spec.outputs
    ]


def _images_tensor(images: list[bytes], size: int):
    import torch

    array = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(size, size, 3) for b in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)


ONCE_PER_CALL = ("_forwards", "_model_s", "_model_start", "_model_end", "_labelled", "_correct", "_classes")


class ExplainActor:
    """Holds the model (loaded once) and the explainers; one call explains a batch of images.
    Its process keeps freed memory for the next forward (``pipeline.allocator``; the job starts
    it with ``ALLOCATOR_ENV``). Each call's wall time rides on its first row, so that the job
    can tell how busy the model was (start-up, idle waits) from the rows it writes.

    LEG-family methods whose sampling parameters agree share one ``sample`` call, so LEG and
    LEG-TV of the same budget cost the forwards once.
    """

    def __init__(self, plan: Plan) -> None:
        import torch

        torch.set_num_threads(plan.torch_threads)
        self.plan = plan
        self.device = "cuda" if plan.use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_job_model(plan, self.device)
        self.model_id = getattr(self.model, "model_id", plan.model)
        self.explainers = {spec.name: spec.build() for spec in plan.specs}
        self.params_text = {spec.name: json.dumps(spec.params, sort_keys=True) for spec in plan.specs}
        self.samplers: dict[str, list[MethodSpec]] = {}
        self.direct: list[MethodSpec] = []
        for spec in plan.specs:
            explainer = self.explainers[spec.name]
            if _is_leg_family(explainer):
                self.samplers.setdefault(_sampling_key(explainer), []).append(spec)
            else:
                self.direct.append(spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        started_at, started = time.time(), time.perf_counter()
        rows: list[dict[str, Any]] = []
        records = batch.to_pylist()
        good = [r for r in records if r["status"] == "ok"]
        reading: dict[str, int] = {}
        for record in records:
            if record["status"] != "ok":
                base = self._base(record, None, None)
                for spec in self.plan.specs:
                    rows.extend(_error_rows(base, spec, record["error"], self.params_text[spec.name]))
        if good:
            images = _images_tensor([r["_image"] for r in good], self.plan.image_size)
            if self.device == "cuda":
                images = images.pin_memory().to(self.device, non_blocking=True)
            with torch.inference_mode():
                targets, scores, predictions, classes = self._targets(images, good)
            labels = [r["label"] for r in good]
            reading = {
                "_labelled": sum(label is not None for label in labels),
                "_correct": sum(label is not None and label == p for label, p in zip(labels, predictions)),
                "_classes": classes,
            }
            bases = [self._base(r, int(t), float(s)) for r, t, s in zip(good, targets, scores)]
            for members in self.samplers.values():
                rows.extend(self._sample(members, images, targets, bases))
            for spec in self.direct:
                rows.extend(self._explain(spec, images, targets, bases))
        if rows:
            if self.device == "cuda":
                torch.cuda.synchronize()
            rows[0].update(_model_s=time.perf_counter() - started, _model_start=started_at,
                           _model_end=time.time(), **reading)
        return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)

    def _base(self, record: dict[str, Any], target: int | None, score: float | None) -> dict[str, Any]:
        carry = bool(self.plan.metrics)
        return {
            "image_id": record["image_id"],
            "source_uri": record["source_uri"],
            "label": record["label"],
            "target": target,
            "target_score": score,
            "model_id": self.model_id,
            "elapsed_s": record.get("decode_s") or 0.0,
            "_image": record["_image"] if carry else None,
            "_mask": record["_mask"] if carry else None,
            "_box": record["_box"] if carry else None,
        }

    def _targets(self, images, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[int], int]:
        """The explained class per image (clean top-1, or the label where asked and known), its
        softmax probability, the clean top-1 classes and the model's number of classes."""
        from methods.base import predict_logits

        logits = predict_logits(self.model, images, batch_size=len(records)).cpu()
        predictions = logits.argmax(dim=1).numpy()
        targets = predictions.copy()
        if self.plan.target == "label":
            for position, record in enumerate(records):
                label = record["label"]
                if label is not None and 0 <= label < logits.shape[1]:
                    targets[position] = label
        probabilities = logits.softmax(dim=1).numpy()
        return (targets.astype(np.int64), probabilities[np.arange(len(records)), targets],
                predictions.tolist(), int(logits.shape[1]))

    def _per_image(self, call, images, targets, bases):
        """``call(images, targets)`` on the batch; if it raises, once per image so that one bad
        image costs only its own rows. Returns ([(position, result or None, error or None,
        seconds)], whether the result is the whole batch's)."""
        started = time.perf_counter()
        try:
            result = call(images, targets)
            share = (time.perf_counter() - started) / len(bases)
            return [(i, result, None, share) for i in range(len(bases))], True
        except Exception:  # noqa: BLE001 - any failure is isolated per image below
            pass
        outcomes = []
        for position in range(len(bases)):
            started = time.perf_counter()
            try:
                result = call(images[position : position + 1], targets[position : position + 1])
                outcomes.append((position, result, None, time.perf_counter() - started))
            except Exception as error:  # noqa: BLE001 - reported in the image's rows
                outcomes.append((position, None, f"{type(error).__name__}: {error}", time.perf_counter() - started))
        return outcomes, False

    def _sample(self, members: list[MethodSpec], images, targets, bases) -> list[dict[str, Any]]:
        sampler = self.explainers[members[0].name]
        outcomes, batched = self._per_image(
            lambda x, t: sampler.sample(self.model, x, t), images, targets, bases
        )
        pending = json.dumps([[spec.name, spec.params] for spec in members])
        rows = []
        for position, stats, error, seconds in outcomes:
            base = bases[position]
            if error is not None:
                for spec in members:
                    rows.extend(_error_rows(base, spec, f"sample: {error}", self.params_text[spec.name]))
                continue
            single = stats[position] if batched else stats
            rows.append(
                {
                    **base,
                    "method": members[0].name,
                    "status": "ok",
                    "elapsed_s": base["elapsed_s"] + seconds,
                    "_forwards": _image_forwards(single),
                    "_stats": pickle.dumps(single),
                    "_pending": pending,
                }
            )
        return rows

    def _explain(self, spec: MethodSpec, images, targets, bases) -> list[dict[str, Any]]:
        explainer = self.explainers[spec.name]
        outcomes, batched = self._per_image(
            lambda x, t: explainer.explain(self.model, x, t), images, targets, bases
        )
        rows = []
        for position, maps, error, seconds in outcomes:
            base = {**bases[position], "elapsed_s": bases[position]["elapsed_s"] + seconds}
            if error is not None:
                rows.extend(_error_rows(base, spec, f"explain: {error}", self.params_text[spec.name]))
                continue
            image_maps = np.asarray(maps[position] if batched else maps[0], dtype=np.float32)
            if spec.lambdas is None:
                image_maps = image_maps[None]
            for lam, saliency in zip(spec.outputs, image_maps):
                rows.append(map_row(base, spec.name, lam, self.params_text[spec.name], saliency))
        return rows


def map_row(base: dict[str, Any], method: str, lam: float | None, params_text: str, saliency: np.ndarray) -> dict[str, Any]:
    """An output row for one map; a map with non-finite values is an error, not a result."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if not np.isfinite(saliency).all():
        return {**base, "method": method, "lam": lam, "params": params_text, "status": "error",
                "error": "map has non-finite values", "saliency_se": None, "reliability": None}
    return {
        **base,
        "method": method,
        "lam": lam,
        "params": params_text,
        "height": int(saliency.shape[0]),
        "width": int(saliency.shape[1]),
        "saliency": saliency.ravel(),
        "status": "ok",
        "error": None,
    }


# ---------------------------------------------------------------------------------------------
# solve

def solve_batch(batch: pa.Table) -> pa.Table:
    """Rows with LEG statistics -> one row per method and lambda; other rows pass through.

    The methods' parameters travel with the statistics, so the solvers run from them directly:
    this stage imports no torch (see ``methods.leg_solvers``).
    """
    from methods.leg_solvers import leg_maps, legtv_solutions
    from methods.leg_uncertainty import legtv_reliability, map_standard_errors, reliability

    rows = []
    for record in batch.to_pylist():
        if record["_stats"] is None:
            rows.append(record)
            continue
        stats = pickle.loads(record["_stats"])
        base = {key: value for key, value in record.items()
                if key not in ("_stats", "_pending", *ONCE_PER_CALL)}
        once = {key: record[key] for key in ONCE_PER_CALL}
        base.update(n_forwards=_image_forwards(stats),
                    capped=None if stats.capped is None else bool(stats.capped[0]))
        certified = stats.group_leg is not None
        start = len(rows)
        for name, params in json.loads(record["_pending"]):
            params_text = json.dumps(params, sort_keys=True)
            spec_rows = []
            started = time.perf_counter()
            try:
                if params.get("lambdas") is not None:
                    solutions = legtv_solutions(
                        stats, params["lambdas"], params["solver"], params["formulation"],
                        params["absolute"],
                    )
                    per_lambda = (
                        legtv_reliability(stats, params["lambdas"], params["solver"],
                                          params["formulation"], params["absolute"])[0]
                        if certified else [None] * len(solutions[0])
                    )
                    for solution, map_reliability in zip(solutions[0], per_lambda):
                        solved = {**base, "elapsed_s": base["elapsed_s"] + solution.solve_s,
                                  "reliability": _finite_or_none(map_reliability)}
                        if solution.status == "ok":
                            spec_rows.append(map_row(solved, name, solution.lam, params_text, solution.map))
                        else:
                            spec_rows.append({**solved, "method": name, "lam": solution.lam,
                                              "params": params_text, "status": "error",
                                              "error": f"solve: {solution.error}",
                                              "reliability": None})
                else:
                    saliency = leg_maps(stats, absolute=params["absolute"])[0]
                    solved = {**base, "elapsed_s": base["elapsed_s"] + time.perf_counter() - started}
                    if certified:
                        solved["reliability"] = _finite_or_none(reliability(stats, params["absolute"])[0])
                        solved["saliency_se"] = map_standard_errors(stats, params["absolute"])[0].ravel()
                    spec_rows.append(map_row(solved, name, None, params_text, saliency))
            except Exception as error:  # noqa: BLE001 - reported in the image's rows
                spec = MethodSpec(name, params, tuple(params["lambdas"]) if "lambdas" in params else None)
                spec_rows = _error_rows(base, spec, f"solve: {type(error).__name__}: {error}", params_text)
            rows.extend(spec_rows)
        # The forwards (and the call's time) were shared by the group: once, on its first row.
        for offset, row in enumerate(rows[start:]):
            row.update(once if offset == 0 else dict.fromkeys(ONCE_PER_CALL))
    for row in rows:
        for key in ONCE_PER_CALL:
            row.setdefault(key, None)
        row.setdefault("_stats", None)
        row.setdefault("_pending", None)
    return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)


def _image_forwards(stats) -> int:
    """The forwards one image's statistics cost (adaptive budgets differ per image)."""
    return int(stats.n_forwards if stats.image_forwards is None else stats.image_forwards[0])


def _finite_or_none(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# ---------------------------------------------------------------------------------------------
# metrics


def needs_model(metrics: tuple[str, ...]) -> bool:
    """Whether any of ``metrics`` runs model forwards (then they need the metrics actor pool)."""
    from methods.metric_names import MODEL_FREE_METRICS

    return not set(metrics) <= MODEL_FREE_METRICS


class MetricsActor:
    """Scores every 'ok' map with ``methods.metrics.compute_metrics`` (the model loaded once)."""

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
    from methods.metrics import compute_metrics

    records = batch.to_pylist()
    scores = {name: [None] * len(records) for name in plan.metrics}
    localised = bool(LOCALISATION_METRICS & set(plan.metrics))
    shares: list[float | None] = [None] * len(records)
    groups: dict[tuple[int, int], list[int]] = {}
    for position, record in enumerate(records):
        if record["status"] == "ok" and record["_image"] is not None:
            groups.setdefault((record["height"], record["width"]), []).append(position)
    size = plan.image_size
    for (height, width), positions in groups.items():
        chosen = [records[p] for p in positions]
        images = _images_tensor([r["_image"] for r in chosen], size)
        maps = np.stack([np.asarray(r["saliency"], np.float32).reshape(height, width) for r in chosen])
        masks = boxes = None
        if any(r["_mask"] is not None for r in chosen):
            masks = np.stack([
                np.frombuffer(r["_mask"], np.uint8).reshape(size, size).astype(bool)
                if r["_mask"] is not None else np.zeros((size, size), bool)
                for r in chosen
            ])
        elif any(r["_box"] is not None for r in chosen):
            boxes = np.array([r["_box"] if r["_box"] is not None else [np.nan] * 4 for r in chosen])
        targets = np.array([r["target"] for r in chosen], dtype=np.int64)
        if localised:
            for position, share in zip(positions, region_shares(masks, boxes, len(chosen), size)):
                shares[position] = _finite_or_none(share)
        try:
            values = compute_metrics(model, images, maps, targets, names=list(plan.metrics),
                                     masks=masks, boxes=boxes, **plan.metric_options)
        except Exception as error:  # noqa: BLE001 - metrics stay null; the map is kept
            for position in positions:
                records[position]["error"] = f"metrics: {type(error).__name__}: {error}"
            continue
        for name, column in values.items():
            for position, value in zip(positions, column):
                scores[name][position] = None if not np.isfinite(value) else float(value)
    table = pa.Table.from_pylist(records, schema=STAGE_SCHEMA)
    for name in plan.metrics:
        table = table.append_column(name, pa.array(scores[name], pa.float64()))
    if localised:
        table = table.append_column(REGION_SHARE, pa.array(shares, pa.float64()))
    return table


def region_shares(masks: np.ndarray | None, boxes: np.ndarray | None, count: int, size: int) -> np.ndarray:
    """The ground-truth region's share of the image per row (NaN without one): the chance level
    of the pointing game and mask energy."""
    from methods.localisation import ground_truth, region_share

    regions = ground_truth(masks, boxes, count, size, size)
    return np.full(count, np.nan) if regions is None else region_share(regions)
