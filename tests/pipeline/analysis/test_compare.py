"""compare_runs on two synthetic outputs whose differences are known."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from evaluation_outputs import CHANCE, VARIANTS, base_maps, write_images, write_output
from legx.methods.metrics.intervals import wilson_interval
from legx.methods.resize import upsample_maps
from legx.pipeline.cli.main import main as legx
from legx.pipeline.analysis.compare import compare_runs, read_summary

LEG, LEGTV = VARIANTS
N_IMAGES = 6


@pytest.fixture
def outputs(tmp_path):
    """A: images 0-5. B: images 0-4 plus img6; leg maps of img1 reversed (Spearman -1) and
    img3 shuffled; the target of img2 changed; LEG-TV maps on a finer grid (upsampled A maps);
    every metric + 0.05 (capped at 1)."""
    paths = write_images(str(tmp_path / "images"), N_IMAGES + 1)
    maps_a = {variant: base_maps(N_IMAGES, seed=i) for i, variant in enumerate(VARIANTS)}
    output_a = write_output(str(tmp_path / "a"), paths[:N_IMAGES], maps_a)

    paths_b = paths[:5] + [paths[6]]
    leg_b = np.concatenate([maps_a[LEG][:5], base_maps(1, seed=9)])
    leg_b[1] = -leg_b[1]
    leg_b[3] = np.random.default_rng(3).permutation(leg_b[3].ravel()).reshape(leg_b[3].shape)
    legtv_b = upsample_maps(np.concatenate([maps_a[LEGTV][:5], base_maps(1, seed=8)]), 8, 8)
    targets = np.array([0, 1, 1, 0, 1, 0])  # A's targets are index % 3: img2 changes 2 -> 1
    output_b = write_output(
        str(tmp_path / "b"), paths_b, {LEG: leg_b, LEGTV: legtv_b}, run_id="run-b",
        metric_offset=0.05, targets=targets,
    )
    return output_a, output_b


def test_compare_finds_the_changed_explanations(outputs, tmp_path):
    output_a, output_b = outputs
    summary = compare_runs(output_a, output_b, str(tmp_path / "cmp"), top_k=3)
    assert (summary["matched"], summary["only_a"], summary["only_b"]) == (10, 2, 2)
    leg = summary["methods"]["leg"]
    assert leg["pairs"] == 5 and leg["target_changed"] == 1
    assert leg["spearman_median"] == pytest.approx(1.0)
    assert leg["metric_shift"]["key_size_mean"] == pytest.approx(0.05)
    # every aggregate has its interval: 1 of 5 targets changed is a rate with Wilson's interval
    rate = leg["target_changed_rate"]
    assert (rate["mean"], rate["n"]) == (pytest.approx(0.2), 5)
    assert [rate["low"], rate["high"]] == pytest.approx(list(wilson_interval(1, 5)))
    assert leg["metric_shift_interval"]["key_size_mean"] == pytest.approx([0.05, 0.05])
    low, high = leg["spearman_interval"]
    assert low <= leg["spearman_mean"] <= high
    pointing_a = leg["metric_a"]["pointing_game"]  # metric 9 of image i: 0.9 + 0.01 i
    assert pointing_a["mean"] == pytest.approx(0.92) and pointing_a["chance"] == CHANCE
    assert [pointing_a["low"], pointing_a["high"]] == pytest.approx(list(wilson_interval(4.6, 5)))
    # ROAD's scores are carried: MoRF and LeRF moved by 0.05, their combination not
    assert leg["metric_shift"]["road_morf"] == pytest.approx(0.05)
    assert leg["metric_shift"]["road_combined"] == pytest.approx(0.0)
    assert leg["metric_a"]["road_lerf"]["mean"] == pytest.approx(0.72)
    legtv = summary["methods"]["leg-tv lam=0.1"]
    assert legtv["spearman_mean"] > 0.8  # same maps on a finer grid: ranks nearly kept
    moved = summary["moved_most"]
    assert (moved[0]["image_id"], moved[0]["method"]) == ("img1.png", "leg")
    assert moved[0]["spearman"] == pytest.approx(-1.0)
    assert (moved[1]["image_id"], moved[1]["method"]) == ("img3.png", "leg")
    assert moved[1]["spearman"] < 0.9
    assert len(moved) == 3


def test_compare_writes_parquet_and_json(outputs, tmp_path):
    output_a, output_b = outputs
    out_dir = tmp_path / "cmp"
    summary = compare_runs(output_a, output_b, str(out_dir))
    assert read_summary(str(out_dir)) == summary
    assert json.loads((out_dir / "summary.json").read_text()) == summary
    pairs = duckdb.sql(f"select * from read_parquet('{out_dir / 'pairs.parquet'}')")
    rows = {
        (image_id, method): (spearman, shift, target_a, target_b)
        for image_id, method, spearman, shift, target_a, target_b in pairs.project(
            "image_id, method, spearman, key_size_mean_shift, target_a, target_b"
        ).fetchall()
    }
    assert len(rows) == 10
    assert rows[("img0.png", "leg")][0] == pytest.approx(1.0)
    assert rows[("img2.png", "leg")][2:] == (2, 1)
    assert rows[("img4.png", "leg-tv")][1] == pytest.approx(0.05)
    # each matched map's ROAD curves travel with it, as stored on each side
    curve_a, curve_b = pairs.filter("image_id = 'img1.png' and method = 'leg'").project(
        "road_morf_curve_a, road_morf_curve_b").fetchall()[0]
    assert curve_a == pytest.approx([0.89 - 0.1 * step for step in range(9)])
    assert curve_b == pytest.approx([0.94 - 0.1 * step for step in range(9)])


def test_identical_outputs_have_no_movement(outputs, tmp_path):
    output_a, _ = outputs
    summary = compare_runs(output_a, output_a, str(tmp_path / "same"))
    assert (summary["only_a"], summary["only_b"]) == (0, 0)
    for entry in summary["methods"].values():
        assert entry["spearman_mean"] == pytest.approx(1.0)
        assert entry["target_changed"] == 0
        assert all(shift == pytest.approx(0.0) for shift in entry["metric_shift"].values())


def test_compare_cli(outputs, tmp_path, capsys):
    output_a, output_b = outputs
    out_dir = tmp_path / "cli"
    assert legx(["compare", output_a, output_b, "-o", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "10 matched maps" in printed and "leg" in printed
    assert "pointing_game: A 0.920 [" in printed and f"chance {CHANCE:.3f}" in printed
    assert (out_dir / "pairs.parquet").exists()
    assert legx(["compare", output_a, str(tmp_path / "nothing"), "-o", str(out_dir)]) == 1
