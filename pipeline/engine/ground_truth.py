"""The job's class list and what became of the ground truth: checked before work starts, counted
after it (the summary's and the run manifest's ``ground_truth``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from legx.pipeline.engine.config import ConfigError
from legx.pipeline.engine.sources.imagenet import AnnotationFileError, ClassList, read_class_list

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig
    from legx.pipeline.engine.sources.annotations import Annotations


def job_classes(config: JobConfig) -> ClassList | None:
    """The ``classes`` file of the job, or None; a ConfigError when it cannot be read."""
    if config.classes is None:
        return None
    try:
        return read_class_list(config.classes, config.storage)
    except AnnotationFileError as error:
        raise ConfigError([f"classes: {config.classes!r} {error}"]) from None


def model_classes(model, image_size: int) -> int:
    """The model's number of outputs, from one forward of a blank image."""
    import torch

    from legx.methods.base import predict_logits

    with torch.inference_mode():
        blank = torch.zeros(1, 3, image_size, image_size)
        return int(predict_logits(model, blank, batch_size=1).shape[1])


def check_class_count(classes: ClassList | None, outputs: int, config: JobConfig) -> None:
    """A class list must name exactly the model's classes: its line i is the model's output i."""
    if classes is not None and len(classes.keys) != outputs:
        raise ConfigError([
            f"classes: {config.classes!r} lists {len(classes.keys)} classes, but the model"
            f" {config.model!r} has {outputs} outputs; the file's line i must name the model's"
            " class i (torchvision's ImageNet models: LOC_synset_mapping.txt, 1000 lines)"
        ])


def ground_truth_counts(annotations: Annotations | None, run_rows: pa.Table) -> dict[str, Any] | None:
    """What the run's images got from the annotations and what the crop and the explained class
    left of their boxes, from the run's rows (image_id, status, label, target, boxes) and the
    annotations; None without annotations.

    ``images_with_label`` / ``images_with_boxes``: the run's images with a label and with a box
    annotation. ``boxes_in_crop``: their boxes in the explained images. ``boxes_cropped_away``: their boxes that the resize and crop left no pixel of.
    ``maps_without_target_box``: ok maps of images with boxes whose explained class has no box
    left, by reason (every box cropped away; boxes only of other classes): their pointing game
    and mask energy are NaN. ``read``: the annotation file's own counts (ImageNet's files)."""
    if annotations is None:
        return None
    import duckdb

    connection = duckdb.connect()
    connection.register("run_rows", run_rows)
    connection.register("annotated", annotations.table.select(
        [name for name in ("image_id", "box", "boxes") if name in annotations.table.column_names]))
    has_boxes = "boxes" in annotations.table.column_names
    has_box = "box" in annotations.table.column_names
    def annotated_boxes(alias: str) -> str:
        if has_boxes:
            return f"len({alias}.boxes)"
        return f"(case when {alias}.box is null then null else 1 end)" if has_box else "null"

    images = connection.execute(f"""
        with images as (
            select image_id, any_value(label) as label, any_value(boxes) as boxes
            from run_rows group by image_id
        )
        select count(*) filter (where i.label is not null),
               count(*) filter (where i.boxes is not null),
               coalesce(sum(len(i.boxes)), 0),
               coalesce(sum(coalesce({annotated_boxes("exact")}, {annotated_boxes("stem")}) - len(i.boxes)), 0)
        from images i
        left join annotated exact on exact.image_id = i.image_id
        left join annotated stem
          on stem.image_id = regexp_replace(regexp_replace(i.image_id, '^.*/', ''), '\\.[^.]*$', '')
    """).fetchone()
    maps = connection.execute("""
        select count(*) filter (where len(boxes) = 0),
               count(*) filter (where len(boxes) > 0 and len(list_filter(
                   boxes, lambda b: b.label is null or b.label = target)) = 0)
        from run_rows where status = 'ok' and boxes is not null
    """).fetchone()
    return {
        "images_with_label": images[0],
        "images_with_boxes": images[1],
        "boxes_in_crop": int(images[2]),
        "boxes_cropped_away": int(images[3]),
        "maps_without_target_box": {"every_box_cropped_away": maps[0], "boxes_of_other_classes_only": maps[1]},
        "read": annotations.counts.as_dict() if annotations.counts is not None else None,
    }
