"""The one definition of every table the job passes along and writes (tests import it too).

    output_schema()   the ``saliency`` table the sink writes (docs/running/outputs.md)
    DECODED_SCHEMA    decode -> explain: one row per image
    STAGE_SCHEMA      explain -> finish -> score -> sink: one row per map (internal columns
                      start with an underscore and are dropped by the sink)
"""

from __future__ import annotations

import pyarrow as pa

# The ground-truth region's share of the image, stored beside the localisation metrics: their
# chance level (``legx.methods.metrics.localisation.region_share``).
REGION_SHARE = "region_share"

# A ground-truth box: (x_min, y_min, x_max, y_max) inclusive pixel indices and the class index it
# belongs to (null: a box of no stated class, the evidence of whichever class is explained). In
# annotations they are in the annotated image's pixels; in the output, in the explained image's.
BOX_TYPE = pa.struct([
    ("x_min", pa.float64()),
    ("y_min", pa.float64()),
    ("x_max", pa.float64()),
    ("y_max", pa.float64()),
    ("label", pa.int64()),
])
BOXES_TYPE = pa.list_(BOX_TYPE)


def metric_fields() -> list[pa.Field]:
    """The metric columns of the table: every column the catalogue's metrics declare
    (``legx.methods.metrics.catalogue.Metric.columns``), typed as declared."""
    from legx.methods.metrics.catalogue import CURVE_TYPE, SCALAR_TYPE, metric_columns

    arrow_types = {SCALAR_TYPE: pa.float64(), CURVE_TYPE: pa.list_(pa.float32())}
    return [pa.field(column.name, arrow_types[column.arrow_type]) for column in metric_columns()]


def output_schema() -> pa.Schema:
    """The ``saliency`` table (docs/running/outputs.md)."""
    fields = [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("label", pa.int64()),
        ("target", pa.int64()),
        # The class names of label and target where the classes come with names (the classes
        # file's descriptions, else the model's own); null where none are known.
        ("label_name", pa.string()),
        ("target_name", pa.string()),
        ("target_score", pa.float64()),
        ("model_id", pa.string()),
        ("method", pa.string()),
        ("lam", pa.float64()),
        ("params", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("saliency", pa.list_(pa.float32())),
        # How far to trust a sampled map (docs/trust.md); null for
        # methods that do not sample. n_forwards counts a sampling shared by several maps on
        # each of them (the manifest's totals count it once).
        ("saliency_se", pa.list_(pa.float32())),
        ("reliability", pa.float64()),
        ("n_forwards", pa.int64()),
        ("capped", pa.bool_()),
        # The image's ground-truth boxes that survive the resize and crop, in the explained
        # image's pixels (every class's; the target's are those whose label is the target or
        # null). Null where the image has no box annotation; older outputs lack the column.
        ("boxes", BOXES_TYPE),
    ]
    fields += metric_fields()
    fields += [(REGION_SHARE, pa.float64())]
    fields += [
        ("status", pa.string()),
        ("error", pa.string()),
        # 'permanent' (a fact about the input) or 'retryable' (an accident of the attempt, which
        # a rerun of the run id retries) on error rows, null on the others; null too in files
        # written before the column existed (``legx.pipeline.engine.error_classes``).
        ("error_class", pa.string()),
        ("elapsed_s", pa.float64()),
        # UTC, stored without a zone: DuckDB returns zoned timestamps to Python only with pytz.
        ("created_at", pa.timestamp("us")),
    ]
    return pa.schema(fields)


def row_key(image_id: str, method: str, lam: float | None) -> str:
    return f"{image_id}\x1f{method}\x1f{'' if lam is None else repr(float(lam))}"


_OUTPUT_FIELDS = {output_field.name: output_field for output_field in output_schema()}

# decode -> explain: the output columns decode fills, its time, and (from decode on, for the
# stages that need pixels) the decoded image and its mask.
_IMAGE_FIELDS = [pa.field("_image", pa.binary()), pa.field("_mask", pa.binary())]

DECODED_SCHEMA = pa.schema(
    [_OUTPUT_FIELDS[name] for name in ("image_id", "source_uri", "label", "status", "error", "boxes")]
    + [pa.field("decode_s", pa.float64())]
    + _IMAGE_FIELDS
)

# Rows between the explain stage and the sink: the output columns the stages fill (typed as the
# output table types them), plus internal ones (leading underscore) that the sink drops.
# _model_s/_model_start/_model_end time one model call (seconds, epoch start and end) and sit on
# the first row of that call only, as _forwards counts an image's forwards on one row: summed or
# min/maxed downstream, each call counts once (see ``ONCE_PER_CALL``). _labelled/_correct count
# the call's images that carry a label and those whose clean top-1 class is that label, and
# _classes is the model's number of outputs, on the same first row. _solver_fallbacks, on each
# map's own row, counts the programs behind the map that LEG-TV's batched solver handed to the
# exact one (``legx.methods.sampled.FinishedMap.fallbacks``).
STAGE_SCHEMA = pa.schema(
    [
        _OUTPUT_FIELDS[name]
        for name in (
            "image_id", "source_uri", "label", "target", "label_name", "target_name",
            "target_score", "model_id", "method", "lam", "params", "height", "width", "saliency",
            "saliency_se", "reliability", "n_forwards", "capped", "boxes", "status", "error",
            "elapsed_s",
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
        ("_solver_fallbacks", pa.int64()),
        ("_stats", pa.binary()),
        ("_pending", pa.string()),
    ]
    + _IMAGE_FIELDS
)


ONCE_PER_CALL = ("_forwards", "_model_s", "_model_start", "_model_end", "_labelled", "_correct", "_classes")
