"""The explain stage: an actor that holds the model and the explainers; one call explains a
batch of decoded images and returns one row per expected output (method, and each entry of its
``outputs()``), or error rows with the reason, so nothing is dropped. A sampled explainer's row
carries its statistics to the finish stage instead (the contract of ``legx.methods.base``)."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import numpy as np
import pyarrow as pa

from legx.pipeline.engine.plan import MethodSpec, Plan, load_job_model
from legx.pipeline.engine.schema import STAGE_SCHEMA


def error_rows(base: dict[str, Any], spec: MethodSpec, error: str, params_text: str) -> list[dict]:
    return [
        {**base, "method": spec.name, "lam": lam, "params": params_text, "status": "error", "error": error}
        for lam in spec.outputs
    ]


def images_tensor(images: list[bytes], size: int):
    import torch

    array = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(size, size, 3) for b in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)


class ExplainActor:
    """Holds the model (loaded once) and the explainers; one call explains a batch of images.
    Its process keeps freed memory for the next forward (``legx.pipeline.engine.allocator``; the job starts
    it with ``ALLOCATOR_ENV``). Each call's wall time rides on its first row, so that the job
    can tell how busy the model was (start-up, idle waits) from the rows it writes.

    Direct explainers run ``explain``; sampled ones run ``sample``, once for all the methods
    whose ``sampling_key()`` agree (LEG and LEG-TV of the same budget cost the forwards once),
    and leave their finish steps to the finish stage.
    """

    def __init__(self, plan: Plan) -> None:
        import torch

        from legx.methods.base import SampledExplainer

        torch.set_num_threads(plan.torch_threads)
        self.plan = plan
        self.device = "cuda" if plan.use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_job_model(plan, self.device)
        self.model_id = getattr(self.model, "model_id", plan.model)
        # Names of the classes: the classes file's descriptions, else the model's own.
        self.class_names = plan.class_names or getattr(self.model, "class_names", None)
        self.explainers = {spec.name: spec.build() for spec in plan.specs}
        self.params_text = {spec.name: json.dumps(spec.params, sort_keys=True) for spec in plan.specs}
        self.sampled: dict[str, list[MethodSpec]] = {}
        self.direct: list[MethodSpec] = []
        for spec in plan.specs:
            explainer = self.explainers[spec.name]
            if isinstance(explainer, SampledExplainer):
                self.sampled.setdefault(explainer.sampling_key(), []).append(spec)
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
                    rows.extend(error_rows(base, spec, record["error"], self.params_text[spec.name]))
        if good:
            images = images_tensor([r["_image"] for r in good], self.plan.image_size)
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
            for members in self.sampled.values():
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
            "label_name": self._name(record["label"]),
            "target_name": self._name(target),
            "target_score": score,
            "model_id": self.model_id,
            "boxes": record["boxes"],
            "elapsed_s": record.get("decode_s") or 0.0,
            "_image": record["_image"] if carry else None,
            "_mask": record["_mask"] if carry else None,
        }

    def _name(self, index: int | None) -> str | None:
        names = self.class_names
        return names[index] if names is not None and index is not None and 0 <= index < len(names) else None

    def _targets(self, images, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[int], int]:
        """The explained class per image (clean top-1, or the label where asked and known), its
        softmax probability, the clean top-1 classes and the model's number of classes."""
        from legx.methods.base import predict_logits

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
        pending = json.dumps([
            {"method": spec.name, "finisher": self.explainers[spec.name].finisher,
             "params": spec.params, "outputs": spec.outputs}
            for spec in members
        ])
        rows = []
        for position, stats, error, seconds in outcomes:
            base = bases[position]
            if error is not None:
                for spec in members:
                    rows.extend(error_rows(base, spec, f"sample: {error}", self.params_text[spec.name]))
                continue
            single = stats[position] if batched else stats
            # The call's discarded forwards ran on the model too: counted once, on its first row.
            discarded = stats.discarded_forwards if not batched or position == 0 else 0
            rows.append(
                {
                    **base,
                    "method": members[0].name,
                    "status": "ok",
                    "elapsed_s": base["elapsed_s"] + seconds,
                    "_forwards": int(single.forwards_per_image()[0]) + discarded,
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
                rows.extend(error_rows(base, spec, f"explain: {error}", self.params_text[spec.name]))
                continue
            image_maps = np.asarray(maps[position] if batched else maps[0], dtype=np.float32)
            if image_maps.ndim == 2:  # the one output of a method with one map per image
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

