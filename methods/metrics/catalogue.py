"""The metrics' catalogue: one declared record per metric (``Metric``), torch-free.

Each record says what the metric is called, which direction is better, whether it needs the
model and a ground-truth region, the output columns it fills (with their Arrow types, spelled as
Arrow prints them: the scalar score and, for ROAD, the stored curve), the options of
``legx.methods.metrics.compute.compute_metrics`` it reads, and one line of description. The
output schema, config validation, ``compute_metrics``' dispatch, the report and ``legx compare``
all read these records, so a metric is declared once.

Kept apart from ``legx.methods.metrics.compute`` (torch) so that the output schema, whose columns
these records declare, can be built in processes that never load torch (the pipeline's decode,
solve and write workers), and so that config validation and the report need no torch either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUNDS: tuple[str, ...] = ("mean", "black", "white", "noise", "dist50", "dist100")

# The Arrow types a metric column may have (``str(pyarrow type)``; the schema maps them).
SCALAR_TYPE = "double"
CURVE_TYPE = "list<item: float>"


@dataclass(frozen=True)
class Column:
    """One output column a metric fills: its name and Arrow type (``SCALAR_TYPE`` or
    ``CURVE_TYPE``)."""

    name: str
    arrow_type: str = SCALAR_TYPE


@dataclass(frozen=True)
class Metric:
    """A metric as the job, the schema and the report know it.

    ``higher_is_better``: the direction of its score. ``needs_model``: it runs model forwards
    (the job scores it on the model's actor pool). ``needs_region``: it is scored against a
    ground-truth region and its chance level is the region's share of the image
    (``legx.methods.metrics.localisation.region_share``). ``rate``: its per-image values are
    hits in [0, 1], so its mean gets Wilson's interval (``legx.methods.metrics.intervals``).
    ``curve_columns``: per-map curves stored beside the score (list<float32>). ``options``: the
    ``compute_metrics`` options it reads. ``family``: the metrics ``compute_metrics`` scores in one
    pass (they share a pixel ranking or a curve).
    """

    name: str
    higher_is_better: bool
    description: str
    family: str
    needs_model: bool = True
    needs_region: bool = False
    rate: bool = False
    curve_columns: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[Column, ...]:
        """The output columns it fills: its score (float64), then its curves (list<float32>)."""
        return (Column(self.name),) + tuple(Column(name, CURVE_TYPE) for name in self.curve_columns)


_PERTURBATION = ("batch_size",)
_ROAD_OPTIONS = _PERTURBATION + ("seed", "road_fractions", "road_steps", "road_noise", "road_tolerance")

METRICS: tuple[Metric, ...] = tuple(
    Metric(
        f"key_size_{background}",
        higher_is_better=False,
        description=(f"smallest fraction of pixels, by |saliency|, whose replacement by the {background}"
                     " background changes the top-1 class (1 if none)"),
        family="key_size",
        options=_PERTURBATION + ("seed", "key_size_coarse_steps"),
    )
    for background in BACKGROUNDS
) + (
    Metric("deletion_auc", higher_is_better=False, family="deletion_insertion",
           description="area under the explained class's probability as the most salient pixels are set to 0",
           options=_PERTURBATION + ("auc_steps",)),
    Metric("insertion_auc", higher_is_better=True, family="deletion_insertion",
           description="area under the explained class's probability as the most salient pixels are"
                       " copied onto a blurred (or zero) image",
           options=_PERTURBATION + ("auc_steps", "insertion_baseline", "blur_sigma")),
    Metric("gini", higher_is_better=True, needs_model=False, family="gini",
           description="Gini index of |map|: sparseness, 0 for a constant map"),
    Metric("pointing_game", higher_is_better=True, needs_model=False, needs_region=True, rate=True,
           family="localisation",
           description="share of the map's maximal pixels inside the ground-truth region (ties shared)",
           options=("pointing_tolerance",)),
    Metric("mask_energy", higher_is_better=True, needs_model=False, needs_region=True, family="localisation",
           description="share of |map| inside the ground-truth region"),
    Metric("road_morf", family="road", higher_is_better=False, curve_columns=("road_morf_curve",), options=_ROAD_OPTIONS,
           description="ROAD, most relevant first: mean height of the explained class's probability as the"
                       " most salient pixels are removed by noisy linear imputation"),
    Metric("road_lerf", family="road", higher_is_better=True, curve_columns=("road_lerf_curve",), options=_ROAD_OPTIONS,
           description="ROAD, least relevant first: the same curve with the least salient pixels removed first"),
    Metric("road_combined", family="road", higher_is_better=True, options=_ROAD_OPTIONS,
           description="ROAD combined: (road_lerf - road_morf) / 2"),
)

METRICS_BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}

# The options of ``legx.methods.metrics.compute.compute_metrics`` a job's ``metric_options`` may
# set (its other parameters are the data), in its signature's order.
METRIC_OPTIONS: tuple[str, ...] = (
    "batch_size",
    "seed",
    "auc_steps",
    "insertion_baseline",
    "blur_sigma",
    "key_size_coarse_steps",
    "pointing_tolerance",
    "road_fractions",
    "road_steps",
    "road_noise",
    "road_tolerance",
)
# The fractions alpha of the image's pixels that ``legx.methods.metrics.compute.sensitivity_curve`` perturbs.
SENSITIVITY_ALPHAS: np.ndarray = np.linspace(0.0, 0.4, 21)


def metric(name: str) -> Metric:
    """The record of metric ``name``; ValueError naming the known metrics otherwise."""
    try:
        return METRICS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(metric_names())}") from None


def metric_names() -> tuple[str, ...]:
    """Every metric's name, in the catalogue's order (the output table's column order)."""
    return tuple(record.name for record in METRICS)


def metric_columns() -> tuple[Column, ...]:
    """Every metric output column, in the catalogue's order."""
    return tuple(column for record in METRICS for column in record.columns)


def higher_is_better(name: str) -> bool:
    return metric(name).higher_is_better


def needs_model(names) -> bool:
    """Whether any of the metrics ``names`` runs model forwards."""
    return any(metric(name).needs_model for name in names)


def region_metrics(names) -> list[str]:
    """Those of ``names`` scored against a ground-truth region (their chance level is its share)."""
    return [name for name in names if metric(name).needs_region]
