"""The finish stage: CPU tasks that run each sampled method's finish step on the statistics its
explain row carries (``legx.methods.base``: LEG's closed form, LEG-TV's linear programs, with their
standard errors and reliability). It imports no torch, nor do the finish steps; rows without
statistics pass through."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa

from legx.pipeline.engine.explain import error_rows, map_row
from legx.pipeline.engine.plan import MethodSpec
from legx.pipeline.engine.schema import ONCE_PER_CALL, STAGE_SCHEMA


def finish_batch(batch: pa.Table) -> pa.Table:
    """Rows with statistics -> one row per method and output; other rows pass through.

    Each method's finish step (a "module:function" path) and parameters travel with the
    statistics, so this stage needs neither the explainers nor torch.
    """
    from legx.methods.sampled import load_finisher

    rows = []
    for record in batch.to_pylist():
        if record["_stats"] is None:
            rows.append(record)
            continue
        stats = pickle.loads(record["_stats"])
        base = {key: value for key, value in record.items()
                if key not in ("_stats", "_pending", *ONCE_PER_CALL)}
        once = {key: record[key] for key in ONCE_PER_CALL}
        base.update(n_forwards=int(stats.forwards_per_image()[0]),
                    capped=None if stats.capped is None else bool(stats.capped[0]))
        start = len(rows)
        for pending in json.loads(record["_pending"]):
            name, params = pending["method"], pending["params"]
            params_text = json.dumps(params, sort_keys=True)
            try:
                finished = load_finisher(pending["finisher"])(stats, params)[0]
                spec_rows = [finished_row(base, name, params_text, item) for item in finished]
            except Exception as error:  # noqa: BLE001 - reported in the image's rows
                spec = MethodSpec(name, params, tuple(pending["outputs"]))
                spec_rows = error_rows(base, spec, f"solve: {type(error).__name__}: {error}", params_text)
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


def finished_row(base: dict, method: str, params_text: str, item) -> dict:
    """The output row of one ``legx.methods.sampled.FinishedMap``: its map, or its error."""
    solved = {**base, "elapsed_s": base["elapsed_s"] + item.seconds, "_solver_fallbacks": item.fallbacks}
    if item.error is not None:
        return {**solved, "method": method, "lam": item.output, "params": params_text,
                "status": "error", "error": f"solve: {item.error}", "reliability": None}
    solved["reliability"] = finite_or_none(item.reliability)
    if item.saliency_se is not None:
        solved["saliency_se"] = np.asarray(item.saliency_se).ravel()
    return map_row(solved, method, item.output, params_text, item.saliency)


def finite_or_none(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
