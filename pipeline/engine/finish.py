"""The finish stage: CPU tasks that turn a sampled method's statistics into its maps (LEG's closed
form, LEG-TV's linear programs) with their standard errors and reliability. It imports no torch
(``methods.leg_solvers``); rows without statistics pass through."""

from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pyarrow as pa

from pipeline.engine.explain import error_rows, image_forwards, map_row
from pipeline.engine.plan import MethodSpec
from pipeline.engine.schema import ONCE_PER_CALL, STAGE_SCHEMA


def finish_batch(batch: pa.Table) -> pa.Table:
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
        base.update(n_forwards=image_forwards(stats),
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
                                  "reliability": finite_or_none(map_reliability)}
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
                        solved["reliability"] = finite_or_none(reliability(stats, params["absolute"])[0])
                        solved["saliency_se"] = map_standard_errors(stats, params["absolute"])[0].ravel()
                    spec_rows.append(map_row(solved, name, None, params_text, saliency))
            except Exception as error:  # noqa: BLE001 - reported in the image's rows
                spec = MethodSpec(name, params, tuple(params["lambdas"]) if "lambdas" in params else None)
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


def finite_or_none(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
