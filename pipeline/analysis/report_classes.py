"""The report's per-class audit section (``legx.pipeline.analysis.per_class``): per method
variant, a sortable table of the classes (flagged first) with n, top-1 accuracy, pointing game
and mass inside the boxes with their 95% intervals and the class's chance level, then, for each
class flagged as explained by its context, the images that show it."""

from __future__ import annotations

from legx.pipeline.analysis.per_class import flagged_images, per_class
from legx.pipeline.analysis.report_data import Variant
from legx.pipeline.analysis.report_html import escape, number, table

# Images listed per flagged class.
LISTED_IMAGES = 10


def _interval(low, high) -> str:
    return "–" if low is None or high is None else f"{number(low)} – {number(high)}"


def per_class_section(connection, variants: list[Variant], columns: list[str], explained_top1: set[str]) -> str:
    """The section, or '' when no row has both a label and a mass inside its boxes.
    ``explained_top1``: the runs that explained the top-1 class (``target: top1``), whose
    share of explained classes equal to the label is the model's top-1 accuracy."""
    if "mask_energy" not in columns or "region_share" not in columns:
        return ""
    scored = connection.execute(
        "select count(*) from saliency where status = 'ok' and label is not null and mask_energy is not null"
    ).fetchall()[0][0]
    if not scored:
        return ""
    parts = [
        "<h2>Per class: explained by the object or by its context?</h2>",
        "<p>Per class (the image's label): images, top-1 accuracy, the tie-aware pointing game and the"
        " mass inside the boxes, each with its 95% interval (Wilson; normal for the mass), and the class's"
        " chance level (its boxes' mean share of the image). A class is flagged <b>explained by context</b>"
        " when its mass interval lies wholly below chance. Flagged classes first; click a heading to sort."
        " Top-1 is shown for runs that explained the top-1 class.</p>",
    ]
    for variant in variants:
        where, parameters = variant.where()
        names, rows = per_class(connection, columns, where, parameters)
        if not rows:
            continue
        body = []
        flagged = []
        for row in rows:
            value = dict(zip(names, row))
            top1 = value["run_id"] in explained_top1
            name = value["class_name"] or ""
            flag = "explained by context" if value["explained_by_context"] else ""
            if flag:
                flagged.append((value["label"], name))
            body.append([
                value["label"], name, value["n"],
                number(value["top1"]) if top1 else "–",
                _interval(value["top1_low"], value["top1_high"]) if top1 else "–",
                number(value["pointing"]), _interval(value["pointing_low"], value["pointing_high"]),
                number(value["mass"]), _interval(value["mass_low"], value["mass_high"]),
                number(value["chance"]), flag,
            ])
        header = ["class", "name", "n", "top-1", "top-1 95%", "pointing game", "pointing 95%",
                  "mass in box", "mass 95%", "chance", "flag"]
        parts.append(f"<h3>{escape(variant.label)}: {len(flagged)} of {len(rows)} classes explained by context</h3>")
        parts.append('<div class="scroll">' + table(header, body, "per-class-" + _slug(variant.label),
                                                    sortable=True) + "</div>")
        if flagged:
            images = flagged_images(connection, where, parameters, LISTED_IMAGES)
            items = []
            for label, name in flagged:
                shown = images.get(label, [])
                listed = ", ".join(f"{escape(image_id)} ({number(mass)} &lt; {number(chance)})"
                                   for image_id, mass, chance in shown)
                items.append(f"<li>{escape(label)} {escape(name)}: {listed or 'none below its own chance'}</li>")
            parts.append("<details><summary>Images of the flagged classes whose mass in the boxes is below"
                         f" their own chance (at most {LISTED_IMAGES} per class)</summary><ul>"
                         + "".join(items) + "</ul></details>")
    return "".join(parts)


def _slug(text: str) -> str:
    return "".join(character if character.isalnum() else "-" for character in text).strip("-")
