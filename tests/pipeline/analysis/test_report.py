"""The HTML report of a synthetic output, checked in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from legx.methods.metrics.intervals import mean_estimate, rate_estimate, wilson_interval

from legx.pipeline.cli.main import main as legx
from legx.pipeline.analysis.compare import compare_runs
from legx.pipeline.analysis.report import write_report
from legx.pipeline.analysis.sanity import write_sanity_table
from legx.pipeline.engine.storage import StorageOptions
from evaluation_outputs import (
    CHANCE,
    IMAGE_SIZE,
    VARIANTS,
    base_maps,
    write_images,
    write_output,
)

CHROMIUM = "/usr/bin/chromium"
N_IMAGES = 5

# Appended to a copy of the report: after load, record what the browser actually rendered.
_CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const result = {
    images: images.length,
    decoded: images.filter((image) => image.complete && image.naturalWidth > 0).length,
    tables: Array.from(document.querySelectorAll("table")).map(
      (table) => [table.id, table.querySelectorAll("tbody tr").length]),
  };
  const out = document.createElement("pre");
  out.id = "legx-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
"""


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, 3))


def _sanity_rows() -> list[dict]:
    rows = []
    for method, lam in VARIANTS:
        for layer_index, (layer, value) in enumerate((("fc", 0.6), ("conv2", 0.3), ("conv1", 0.1)), 1):
            for image_index in range(2):
                rows.append({"method": method, "lam": lam, "layer": layer, "layer_index": layer_index,
                             "image_index": image_index, "spearman": value, "spearman_abs": value + 0.1})
    return rows


@pytest.fixture
def output(tmp_path):
    paths = write_images(str(tmp_path / "images"), N_IMAGES)
    maps = {variant: base_maps(N_IMAGES, seed=i) for i, variant in enumerate(VARIANTS)}
    out = write_output(str(tmp_path / "out"), paths, maps, error_images=("broken.jpg",))
    write_sanity_table(_sanity_rows(), out, "run-a", "toy")
    return out


class _Tables(HTMLParser):
    """Cell texts of every table, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._current: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._current = dict(attrs).get("id", "")
            self.tables[self._current] = []
        elif tag == "tr" and self._current is not None:
            self.tables[self._current].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._current][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._current = None


def _tables(path: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    with open(path, encoding="utf-8") as handle:
        parser.feed(handle.read())
    return parser.tables


def test_report_content(output, tmp_path):
    path = str(tmp_path / "report.html")
    report = write_report(output, path, model=_tiny_model(), sensitivity_images=2)
    assert (report.rows, report.ok, report.errors) == (12, 10, 2)
    assert report.variants == ["leg", "leg-tv lam=0.1"]
    # distributions, ROAD curves, 2 galleries, sanity, sensitivity
    assert report.images == 6
    tables = _tables(path)
    key_size = {row[0]: row for row in tables["key-size"][1:]}
    # key_size_mean of image i is 0.01 i: mean = median = 0.02 over 5 images
    assert key_size["leg"][1:3] == ["5", "0.020 / 0.020"]
    assert len(tables["errors"]) == 1 + 2 and tables["errors"][1][0] == "broken.jpg"
    # Means with intervals: pointing game (metric 9 of image i: 0.9 + 0.01 i) gets Wilson's
    # interval on its expected count, and the region share as chance beside it.
    header, *rows = tables["intervals"]
    intervals = {row[0]: dict(zip(header, row)) for row in rows}
    pointing = rate_estimate(0.9 + 0.01 * np.arange(N_IMAGES))
    assert intervals["leg"]["pointing_game ↑"] == f"{pointing.text()} (n=5)"
    assert intervals["leg"]["chance (localisation)"] == f"{CHANCE:.3f}"
    assert intervals["leg"]["key_size_mean ↓"] == f"{mean_estimate(0.01 * np.arange(5)).text()} (n=5)"
    assert [row[:2] for row in tables["sanity"][1:4]] == [["leg", "1"], ["leg", "2"], ["leg", "3"]]
    # ROAD curves: at the default fractions 0.1..0.9, the MoRF curve of image i is 0.9 - 0.1 step
    # - 0.01 i, so its mean at 0.5 (step 4) is 0.48 over the 5 images.
    road = {(row[0], row[1], row[2]): row for row in tables["road-curves"][1:]}
    morf_half = mean_estimate(0.5 - 0.01 * np.arange(N_IMAGES))
    assert road[("road_morf_curve", "leg", "0.5")][3:] == [morf_half.text(), "5"]
    assert {key[2] for key in road} == {f"{k / 10:g}" for k in range(1, 10)}
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert not re.search(r'src="(?!data:image/png;base64,)', text)
    # key_size_mean grows with the image index: img0 is best, img4 worst, random is another
    for variant in ("leg", "leg-tv lam=0.1"):
        picks = dict(report.gallery[variant])
        assert (picks["best"], picks["worst"]) == ("img0.png", "img4.png")
        assert picks["random"] not in ("img0.png", "img4.png")


def test_report_without_model_notes_the_skipped_sensitivity(output, tmp_path):
    path = str(tmp_path / "report.html")
    report = write_report(output, path)
    assert any("sensitivity curves need the model" in note for note in report.notes)
    with open(path, encoding="utf-8") as handle:
        assert "Sensitivity analysis" in handle.read()


def test_report_with_comparison_and_cli(output, tmp_path, capsys):
    paths = write_images(str(tmp_path / "images"), N_IMAGES)
    maps = {variant: base_maps(N_IMAGES, seed=i) for i, variant in enumerate(VARIANTS)}
    maps[VARIANTS[0]][3] = -maps[VARIANTS[0]][3]
    other = write_output(str(tmp_path / "other"), paths, maps, run_id="run-b", metric_offset=0.05)
    compare_runs(output, other, str(tmp_path / "cmp"))
    path = str(tmp_path / "cli.html")
    markdown = tmp_path / "summary.md"
    assert legx(["report", output, "-o", path, "--compare", str(tmp_path / "cmp"),
                 "--markdown", str(markdown)]) == 0
    assert "wrote" in capsys.readouterr().out
    lines = markdown.read_text().splitlines()
    assert lines[0].startswith("| method | maps | key size mean (mean [95%] / median)")
    key_size_mean = mean_estimate(0.01 * np.arange(N_IMAGES))  # metric 0 of image i: 0.01 i
    assert lines[2].startswith(f"| leg | 5 | {key_size_mean.text()} / 0.020 | ")
    # the metrics in the catalogue's order, the chance level last
    assert lines[0].endswith("| gini ↑ (mean [95%]) | pointing_game ↑ (mean [95%]) | mask_energy ↑ (mean [95%])"
                             " | road_morf ↓ (mean [95%]) | road_lerf ↑ (mean [95%]) | road_combined ↑ (mean [95%])"
                             " | chance (localisation) |")
    assert lines[2].endswith(f"| {CHANCE:.3f} |")
    tables = _tables(path)
    moved = tables["moved"][1]
    assert moved[:3] == ["img3.png", "leg", "-1.000"]
    compare = {row[0]: row for row in tables["compare"][1:]}
    low, high = wilson_interval(0, N_IMAGES)  # no target changed
    assert compare["leg"][5:] == ["0", f"[{low:.3f}, {high:.3f}]"]
    sides = {(row[0], row[1]): row for row in tables["compare-sides"][1:]}
    assert sides[("leg", "pointing_game")][4] == f"{CHANCE:.3f}"
    shifts = {row[0]: row for row in tables["compare-metrics"][1:]}
    assert shifts["key_size_mean"][1] == "0.050 [0.050, 0.050]"


def test_report_of_s3_output(tmp_path, s3_endpoint, s3_bucket):
    import pyarrow.fs as pafs

    local = tmp_path / "local"
    remote = f"s3://{s3_bucket}/job"
    images = write_images(str(local / "images"), 3)
    uris = [f"{remote}/images/{os.path.basename(p)}" for p in images]
    maps = {variant: base_maps(3, seed=i) for i, variant in enumerate(VARIANTS)}
    write_output(str(local / "job"), uris, maps)
    filesystem = pafs.S3FileSystem(endpoint_override=s3_endpoint.split("//")[1], scheme="http")
    pafs.copy_files(str(local / "job"), f"{s3_bucket}/job", destination_filesystem=filesystem)
    pafs.copy_files(str(local / "images"), f"{s3_bucket}/job/images", destination_filesystem=filesystem)
    path = str(tmp_path / "s3.html")
    report = write_report(remote, path, storage=StorageOptions(endpoint_url=s3_endpoint))
    assert report.ok == 6
    assert not any("could not be read" in note for note in report.notes)


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless Chromium not installed (apt-get install -y chromium; .ci/run installs it)",
)
def test_report_renders_in_chromium(output, tmp_path):
    path = str(tmp_path / "report.html")
    write_report(output, path, model=_tiny_model(), sensitivity_images=2)
    checked = tmp_path / "checked.html"
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    checked.write_text(text.replace("</body>", _CHECK_SCRIPT + "</body>"), encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
        checked.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    match = re.search(r'<pre id="legx-check">(.*?)</pre>', result.stdout, re.S)
    assert match, f"no check output; stderr: {result.stderr[-2000:]}"
    check = json.loads(match.group(1).replace("&quot;", '"'))
    assert check["images"] == 6
    assert check["decoded"] == check["images"]
    rows = dict(check["tables"])
    for table in ("runs", "key-size", "metrics", "road-curves", "sanity", "errors"):
        assert rows[table] > 0, (table, rows)


def test_report_shows_the_model_accuracy_and_warns_near_chance(output, tmp_path):
    from legx.pipeline.engine.manifest import top1_reading

    manifest_path = os.path.join(output, "runs", "run-a.json")
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    manifest.update(model_input_size=64, top1=top1_reading(24, 3, 6))
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    path = str(tmp_path / "report.html")
    report = write_report(output, path)
    row = _tables(path)["model-accuracy"][1]
    assert row[0] == "run-a" and row[4:] == ["3 / 24", "0.125", "0.043 - 0.310", "0.167", "NOT above chance"]
    assert any("is not above chance (0.17)" in note for note in report.notes)
