"""The stages in process, without Ray: a model call's time rides on one row from the explain
actor through the finish stage to the writer's summary, however many rows the call fans out to."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from legx.pipeline.engine.sink import ParquetWriter, WriteCounts
from legx.pipeline.engine.explain import ExplainActor
from legx.pipeline.engine.finish import finish_batch
from legx.pipeline.engine.plan import Plan, method_spec
from legx.pipeline.engine.schema import DECODED_SCHEMA
from legx.pipeline.engine.storage import StorageOptions

SIZE = 32


def _decoded(count: int) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = [{"image_id": "broken.png", "source_uri": "broken.png", "label": None, "status": "error",
             "error": "decode: not an image", "decode_s": 0.0}]
    for index in range(count):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        rows.append({"image_id": f"{index}.png", "source_uri": f"{index}.png", "label": None,
                     "status": "ok", "error": None, "decode_s": 0.001, "_image": pixels.tobytes()})
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def test_a_model_calls_time_counts_once_downstream(tmp_path):
    grid = {"grid_size": 4, "n_samples": 8}
    plan = Plan(model="demo", specs=(method_spec("leg", grid), method_spec("leg-tv", {**grid, "lambdas": [0.1, 0.3]})),
                image_size=SIZE, resize="crop", target="top1", use_gpu=False, actor_cpus=1)
    actor = ExplainActor(plan)
    calls = [actor(_decoded(3)), actor(_decoded(2))]

    for explained in calls:
        busy = explained.column("_model_s").to_pylist()
        assert busy[0] > 0 and all(value is None for value in busy[1:])
        start, end = explained.column("_model_start")[0].as_py(), explained.column("_model_end")[0].as_py()
        assert 0 < end - start and abs((end - start) - busy[0]) < 0.05

    solved = [finish_batch(explained) for explained in calls]
    # leg + leg-tv at two lambdas per good image, three error rows for the broken one
    assert [table.num_rows for table in solved] == [4 * 3, 3 * 3]
    for explained, table in zip(calls, solved):
        for column in ("_model_s", "_forwards"):
            assert pa.compute.sum(table.column(column)).as_py() == pa.compute.sum(explained.column(column)).as_py()
        assert table.column("_model_s").null_count == table.num_rows - 1

    writer = ParquetWriter(str(tmp_path / "out"), StorageOptions(), "r1", "demo", anchor=("leg", None))
    summaries = [writer.write(table) for table in solved]
    for explained, summary in zip(calls, summaries):
        assert summary.model_s == explained.column("_model_s")[0].as_py()
        assert summary.model_start == explained.column("_model_start")[0].as_py()
        assert summary.model_end == explained.column("_model_end")[0].as_py()
    assert summaries[0].model_end <= summaries[1].model_start
    # What on_write_complete hands the driver: the calls' busy time added, their span kept.
    total = sum(summaries, WriteCounts())
    assert total.model_s == summaries[0].model_s + summaries[1].model_s
    assert (total.model_start, total.model_end) == (summaries[0].model_start, summaries[1].model_end)
    assert total.rows == sum(table.num_rows for table in solved) and total.skipped == 0


def test_top1_reading_is_a_wilson_interval_against_chance():
    from legx.pipeline.engine.manifest import top1_reading, top1_warning

    # Known answers (labelled, correct, classes): Wilson 95% intervals of 5/10 and 0/10.
    half = top1_reading(10, 5, 2)
    assert half["interval_95"] == [0.2366, 0.7634] and half["near_chance"]  # 0.5 is chance
    assert top1_reading(10, 0, 6)["interval_95"] == [0.0, 0.2775]
    clear = top1_reading(10, 9, 6)
    assert clear["accuracy"] == 0.9 and clear["chance"] == 0.1667 and not clear["near_chance"]
    assert top1_warning(clear, 64, 64) is None
    assert top1_reading(0, 0, 6) is None and top1_warning(None, 64, 64) is None
    warning = top1_warning(top1_reading(12, 2, 6), 224, 64)
    assert warning.startswith("WARNING") and "trained on 64 px images and this job resizes to 224 px" in warning


def test_leg_and_leg_tv_share_one_sample_only_when_they_clip_alike():
    leg, legtv = method_spec("leg", {"clip": False}).build(), method_spec("leg-tv", {"clip": False}).build()
    assert leg.sampling_key() == legtv.sampling_key()
    assert leg.sampling_key() != method_spec("leg-tv", {}).build().sampling_key()


def test_every_row_says_how_far_to_trust_its_map(tmp_path):
    import duckdb

    grid = {"grid_size": 4, "n_samples": 16}
    plan = Plan(model="demo", specs=(method_spec("leg", grid), method_spec("leg-tv", {**grid, "lambdas": [0.1]}),
                                     method_spec("grad-cam", {})),
                image_size=SIZE, resize="crop", target="top1", use_gpu=False, actor_cpus=1)
    solved = finish_batch(ExplainActor(plan)(_decoded(2)))
    writer = ParquetWriter(str(tmp_path / "out"), StorageOptions(), "r1", "demo", anchor=("leg", None))
    summary = writer.write(solved)
    assert summary.forwards == 2 * 48  # the shared sampling counts once in the totals
    rows = duckdb.sql(
        f"select method, status, len(saliency) cells, len(saliency_se) se_cells, reliability,"
        f" n_forwards, capped from read_parquet('{tmp_path}/out/saliency/**/*.parquet')"
        " where image_id != 'broken.png' order by method"
    ).fetchall()
    by_method = {}
    for method, status, cells, se_cells, reliability, forwards, capped in rows:
        by_method.setdefault(method, []).append((cells, se_cells, reliability, forwards, capped))
        assert status == "ok" and capped is None  # a fixed budget has no target to be capped at
    for cells, se_cells, reliability, forwards, _ in by_method["leg"]:
        assert se_cells == cells == 16 and -1 <= reliability <= 1 and forwards == 48
    for cells, se_cells, reliability, forwards, _ in by_method["leg-tv"]:
        assert se_cells is None and -1 <= reliability <= 1 and forwards == 48
    for cells, se_cells, reliability, forwards, _ in by_method["grad-cam"]:
        assert se_cells is None and reliability is None and forwards is None
    broken = duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/out/saliency/**/*.parquet')"
        " where image_id = 'broken.png' and (reliability is not null or n_forwards is not null)"
    ).fetchall()[0][0]
    assert broken == 0


def test_adaptive_budgets_reach_the_rows():
    grid = {"grid_size": 4, "n_samples": "auto", "round_samples": 16, "max_samples": 64,
            "target_reliability": 0.99}
    plan = Plan(model="demo", specs=(method_spec("leg", grid), method_spec("leg-tv", {**grid, "lambdas": [0.1]})),
                image_size=SIZE, resize="crop", target="top1", use_gpu=False, actor_cpus=1)
    solved = finish_batch(ExplainActor(plan)(_decoded(2)))
    rows = [row for row in solved.to_pylist() if row["image_id"] != "broken.png"]
    assert {row["method"] for row in rows} == {"leg", "leg-tv"}
    for row in rows:
        # rounds of 48 forwards, at most 4 of them; a target of 0.99 is out of reach here
        assert row["n_forwards"] in (96, 144, 192) and row["capped"] is (row["n_forwards"] == 192)
    forwards = [row["_forwards"] for row in rows if row["_forwards"] is not None]
    assert forwards == [row["n_forwards"] for row in rows if row["method"] == "leg"]


def test_road_scores_and_curves_reach_the_parquet_rows(tmp_path):
    import duckdb

    from legx.pipeline.engine.score import MetricsActor

    plan = Plan(model="demo", specs=(method_spec("leg", {"grid_size": 4, "n_samples": 8}),), image_size=SIZE,
                resize="crop", target="top1", use_gpu=False, actor_cpus=1,
                metrics=("road_morf", "road_lerf", "road_combined", "gini"),
                metric_options={"road_steps": 3, "road_noise": 0.0})
    scored = MetricsActor(plan)(finish_batch(ExplainActor(plan)(_decoded(2))))
    ParquetWriter(str(tmp_path / "out"), StorageOptions(), "r1", "demo", anchor=("leg", None)).write(scored)
    rows = duckdb.sql(
        f"select image_id, status, road_morf, road_lerf, road_combined, road_morf_curve, road_lerf_curve"
        f" from read_parquet('{tmp_path / 'out'}/saliency/**/*.parquet') order by image_id"
    ).fetchall()
    assert [row[:2] for row in rows] == [("0.png", "ok"), ("1.png", "ok"), ("broken.png", "error")]
    for _, _, morf, lerf, combined, morf_curve, lerf_curve in rows[:2]:
        assert len(morf_curve) == len(lerf_curve) == 3
        assert all(0 <= p <= 1 for p in morf_curve + lerf_curve)
        # the stored score is the curve's mean height over the fractions 0.25, 0.5, 0.75
        assert abs(morf - (morf_curve[0] / 4 + morf_curve[1] / 2 + morf_curve[2] / 4)) < 1e-6
        assert abs(combined - (lerf - morf) / 2) < 1e-12
    assert rows[2][2:] == (None,) * 5


def test_programs_left_to_the_exact_solver_are_counted_by_the_writer(tmp_path, monkeypatch):
    """Each LEG-TV row carries the programs behind its map that the batched solver handed to
    Clarabel; the writer sums them for the run's manifest. Capped at one iteration, the batched
    solver finishes none: every program of every map and reliability is counted."""
    from legx.methods.leg import interior_point
    from legx.methods.leg.uncertainty import LEGTV_BOOTSTRAP_DRAWS

    grid = {"grid_size": 4, "n_samples": 64}
    plan = Plan(model="demo", specs=(method_spec("leg-tv", {**grid, "lambdas": [0.1, 0.3]}),),
                image_size=SIZE, resize="crop", target="top1", use_gpu=False, actor_cpus=1)
    explained = ExplainActor(plan)(_decoded(2))
    writer = ParquetWriter(str(tmp_path / "out"), StorageOptions(), "r1", "demo", anchor=("leg-tv", 0.1))
    assert writer.write(finish_batch(explained)).solver_fallbacks == 0

    monkeypatch.setattr(interior_point, "MAX_ITERATIONS", 1)
    solved = finish_batch(explained)
    rows = solved.filter(pa.compute.equal(solved.column("status"), "ok"))
    assert rows.num_rows == 2 * 2 and rows.column("reliability").null_count == 0
    programs_per_map = 3 * (1 + 2 * (LEGTV_BOOTSTRAP_DRAWS + 1))  # channels x (map + bootstrap)
    assert rows.column("_solver_fallbacks").to_pylist() == [programs_per_map] * 4
    again = ParquetWriter(str(tmp_path / "again"), StorageOptions(), "r1", "demo", anchor=("leg-tv", 0.1))
    assert again.write(solved).solver_fallbacks == 4 * programs_per_map


def test_a_tasks_images_are_finished_together_and_a_bad_one_fails_alone():
    """The rows of a task share one finish call per method (LEG-TV's programs in one batch): each
    image gets the maps it gets alone; an image whose statistics break the call gets error rows,
    and the others still their maps; a finish step that cannot be loaded fails its method's rows."""
    import json
    import pickle

    grid = {"grid_size": 4, "n_samples": 64}
    plan = Plan(model="demo", specs=(method_spec("leg", grid), method_spec("leg-tv", {**grid, "lambdas": [0.1, 0.3]})),
                image_size=SIZE, resize="crop", target="top1", use_gpu=False, actor_cpus=1)
    explained = ExplainActor(plan)(_decoded(3))
    together = finish_batch(explained).to_pylist()
    alone = [row for index in range(explained.num_rows) for row in finish_batch(explained.slice(index, 1)).to_pylist()]
    key = lambda row: (row["image_id"], row["method"], row["lam"])  # noqa: E731
    assert sorted(map(key, together)) == sorted(map(key, alone))
    maps_alone = {key(row): row["saliency"] for row in alone if row["status"] == "ok"}
    assert len(maps_alone) == 3 * (1 + 2)
    for row in together:
        if row["status"] == "ok":
            np.testing.assert_allclose(row["saliency"], maps_alone[key(row)], rtol=1e-5, atol=1e-6)

    records = explained.to_pylist()
    bad = next(record for record in records if record["_stats"] is not None)
    stats = pickle.loads(bad["_stats"])
    stats.g_hat[:] = np.nan  # the LEG-TV programs refuse it
    bad["_stats"] = pickle.dumps(stats)
    broken = finish_batch(pa.Table.from_pylist(records, schema=explained.schema)).to_pylist()
    failed = {key(row) for row in broken if row["status"] == "error" and row["image_id"] == bad["image_id"]}
    assert (bad["image_id"], "leg-tv", 0.1) in failed and (bad["image_id"], "leg-tv", 0.3) in failed
    others = [row for row in broken if row["image_id"] not in (bad["image_id"], "broken.png")]
    assert len(others) == 2 * 3 and all(row["status"] == "ok" for row in others)

    # a finish step that cannot be loaded: its method's rows fail, the other method's do not
    for record in records:
        if record["_pending"] is not None:
            pendings = json.loads(record["_pending"])
            for pending in pendings:
                if pending["method"] == "leg-tv":
                    pending["finisher"] = "legx.methods.leg.finish:no_such_step"
            record["_pending"] = json.dumps(pendings)
    unloadable = [row for row in finish_batch(pa.Table.from_pylist(records, schema=explained.schema)).to_pylist()
                  if row["image_id"] != "broken.png"]
    assert len([row for row in unloadable if row["method"] == "leg-tv"]) == 3 * 2
    assert all(row["status"] == "error" and "no_such_step" in row["error"]
               for row in unloadable if row["method"] == "leg-tv")
    assert sum(row["status"] == "ok" for row in unloadable if row["method"] == "leg") >= 2
