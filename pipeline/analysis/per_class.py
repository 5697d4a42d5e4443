"""The per-class audit: which classes does the model explain by their context rather than the
object? One DuckDB query over the ``saliency`` view (``per_class_sql``), per method variant and
class (the image's label):

    n              the class's explained images ('ok' rows with a label)
    top1           the share whose explained class is the label: the model's top-1 accuracy
                   on the class when the job explained the top-1 class (``target: top1``)
    pointing       the tie-aware pointing game's mean over the images it scored
    mass           the mass inside the boxes (``mask_energy``) over the images it scored
    chance         the class's chance level: the mean share of the image its ground truth
                   covers (``region_share``) over those images; a map that knows nothing
                   scores it on both metrics
    *_low/_high    95% intervals: Wilson's for top-1 and the pointing game (as
                   ``legx.methods.metrics.intervals.wilson_interval``, the pointing game's fractional
                   hits as an expected count); for the mass, the normal interval of a mean,
                   mean +/- z sd / sqrt(n), which the per-class table computes in the query
                   (the report's per-method tables bootstrap instead; over 1,000 classes a
                   bootstrap per class would dominate the report's time)
    explained_by_context   the mass interval lies wholly below chance: the maps put less of
                   their mass on the object than a map that knows nothing would

Sorted with the flagged classes first, the furthest below chance first. ``flagged_images`` lists
a flagged class's images whose own mass inside the boxes is below their own chance level.
Everything is computed in DuckDB: nothing loops over rows in Python.
"""

from __future__ import annotations

from statistics import NormalDist

from legx.methods.metrics.intervals import CONFIDENCE

Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
# A class needs this many scored images for its mass interval (a standard deviation needs two).
MIN_IMAGES = 2

# Wilson's interval of s successes out of n, as ``legx.methods.metrics.intervals.wilson_interval``.
MACROS = f"""
create or replace temp macro legx_wilson_centre(s, n) as
    (s / n + {Z}^2 / (2 * n)) / (1 + {Z}^2 / n);
create or replace temp macro legx_wilson_half(s, n) as
    {Z} * sqrt((s / n) * (1 - s / n) / n + {Z}^2 / (4 * n * n)) / (1 + {Z}^2 / n);
"""


def per_class_sql(columns: list[str], where: str = "true") -> str:
    """The audit query (macros, then one select) over the view ``saliency`` whose columns are
    ``columns``; ``where`` narrows the rows (e.g. one method). Usable as it is in ``legx
    query``: ``legx query OUTPUT per-class`` runs it over the whole output."""
    name = "any_value(label_name)" if "label_name" in columns else "null"
    return MACROS + f"""
with classes as (
    select run_id, method, lam, label, {name} as class_name,
           count(*) as n,
           count(*) filter (where target = label) as correct,
           count(pointing_game) as n_pointing,
           sum(pointing_game) as hits,
           count(mask_energy) as n_mass,
           avg(mask_energy) as mass,
           stddev_samp(mask_energy) as mass_sd,
           avg(region_share) filter (where mask_energy is not null) as chance
    from saliency
    where status = 'ok' and label is not null and ({where})
    group by run_id, method, lam, label
), intervals as (
    select *,
           correct / n as top1,
           greatest(0, legx_wilson_centre(correct, n) - legx_wilson_half(correct, n)) as top1_low,
           least(1, legx_wilson_centre(correct, n) + legx_wilson_half(correct, n)) as top1_high,
           hits / nullif(n_pointing, 0) as pointing,
           case when n_pointing > 0 then greatest(0, legx_wilson_centre(hits, n_pointing)
                - legx_wilson_half(hits, n_pointing)) end as pointing_low,
           case when n_pointing > 0 then least(1, legx_wilson_centre(hits, n_pointing)
                + legx_wilson_half(hits, n_pointing)) end as pointing_high,
           case when n_mass >= {MIN_IMAGES} then greatest(0, mass - {Z} * mass_sd / sqrt(n_mass)) end as mass_low,
           case when n_mass >= {MIN_IMAGES} then least(1, mass + {Z} * mass_sd / sqrt(n_mass)) end as mass_high
    from classes
)
select run_id, method, lam, label, class_name, n,
       top1, top1_low, top1_high,
       n_pointing, pointing, pointing_low, pointing_high,
       n_mass, mass, mass_low, mass_high, chance,
       coalesce(mass_high < chance, false) as explained_by_context
from intervals
order by explained_by_context desc, coalesce(mass_high - chance, 1e9), run_id, method, lam nulls first, label
"""


def per_class(connection, columns: list[str], where: str = "true", parameters: list | None = None) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of the audit over ``connection``'s ``saliency`` view."""
    result = connection.execute(per_class_sql(columns, where), parameters or [])
    return [description[0] for description in result.description], result.fetchall()


def flagged_images(connection, where: str = "true", parameters: list | None = None, limit: int = 10) -> dict[int, list[tuple]]:
    """For each class of the rows matching ``where`` (one method variant), its images whose mass
    inside the boxes lies below their own chance level, furthest below first, at most ``limit``
    per class: {label: [(image_id, mass, chance)]}."""
    rows = connection.execute(f"""
        select label, image_id, mask_energy, region_share from (
            select label, image_id, mask_energy, region_share,
                   row_number() over (partition by label order by mask_energy - region_share, image_id) as rank
            from saliency
            where status = 'ok' and label is not null and mask_energy < region_share and ({where})
        ) where rank <= {int(limit)} order by label, rank
    """, parameters or []).fetchall()
    images: dict[int, list[tuple]] = {}
    for label, image_id, mass, chance in rows:
        images.setdefault(label, []).append((image_id, mass, chance))
    return images
