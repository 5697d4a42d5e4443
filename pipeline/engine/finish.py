"""The finish stage: CPU tasks that run each sampled method's finish step on the statistics its
explain row carries (``legx.methods.base``: LEG's closed form, LEG-TV's linear programs, with their
standard errors and reliability). It imports no torch, nor do the finish steps; rows without
statistics pass through.

The rows of a task that share a finish step and its parameters are finished in one call where
their statistics concatenate (``LegStatistics.concat``): LEG-TV's batched solver then takes every
program of the task together, which keeps its arrays full for longer than one image's programs
do. When that call fails, each image is finished alone, so that only the image at fault gets
error rows.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

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
    records = batch.to_pylist()
    statistics = [None if record["_stats"] is None else pickle.loads(record["_stats"]) for record in records]
    pendings = [[] if record["_stats"] is None else json.loads(record["_pending"]) for record in records]
    # (finisher, parameters) -> the (record, pending) positions that call it
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for position, pending_list in enumerate(pendings):
        for slot, pending in enumerate(pending_list):
            key = (pending["finisher"], json.dumps(pending["params"], sort_keys=True))
            groups.setdefault(key, []).append((position, slot))
    finished: dict[tuple[int, int], Any] = {}
    for (finisher, params_text), members in groups.items():
        finished.update(_finish_group(finisher, json.loads(params_text),
                                      [(member, statistics[member[0]]) for member in members]))

    rows = []
    for position, record in enumerate(records):
        if statistics[position] is None:
            rows.append(record)
            continue
        stats = statistics[position]
        base = {key: value for key, value in record.items()
                if key not in ("_stats", "_pending", *ONCE_PER_CALL)}
        once = {key: record[key] for key in ONCE_PER_CALL}
        base.update(n_forwards=int(stats.forwards_per_image()[0]),
                    capped=None if stats.capped is None else bool(stats.capped[0]))
        start = len(rows)
        for slot, pending in enumerate(pendings[position]):
            name, params = pending["method"], pending["params"]
            params_text = json.dumps(params, sort_keys=True)
            result = finished[(position, slot)]
            if isinstance(result, Exception):
                spec = MethodSpec(name, params, tuple(pending["outputs"]))
                rows.extend(error_rows(base, spec, f"solve: {type(result).__name__}: {result}", params_text))
            else:
                rows.extend(finished_row(base, name, params_text, item) for item in result)
        # The forwards (and the call's time) were shared by the group: once, on its first row.
        for offset, row in enumerate(rows[start:]):
            row.update(once if offset == 0 else dict.fromkeys(ONCE_PER_CALL))
    for row in rows:
        for key in ONCE_PER_CALL:
            row.setdefault(key, None)
        row.setdefault("_stats", None)
        row.setdefault("_pending", None)
    return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)


def _finish_group(finisher_path: str, params: dict, members: list[tuple[tuple[int, int], Any]]) -> dict:
    """Each member's outputs (a list of ``FinishedMap``), or the exception its finish step raised:
    one call on the members' statistics concatenated where their type allows it (module
    docstring), else one call per member."""
    from legx.methods.sampled import load_finisher

    try:
        finisher = load_finisher(finisher_path)
    except Exception as error:  # noqa: BLE001 - reported in every member's rows
        return {key: error for key, _ in members}
    parts = [stats for _, stats in members]
    concat = getattr(type(parts[0]), "concat", None)
    if len(parts) > 1 and concat is not None:
        try:
            together = finisher(concat(parts), params)
        except Exception:  # noqa: BLE001 - each image alone below, so that only its rows fail
            together = None
        if together is not None:
            return {key: outputs for (key, _), outputs in zip(members, together)}
    results = {}
    for key, stats in members:
        try:
            results[key] = finisher(stats, params)[0]
        except Exception as error:  # noqa: BLE001 - reported in the image's rows
            results[key] = error
    return results


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
