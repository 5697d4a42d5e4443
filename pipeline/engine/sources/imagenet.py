"""ImageNet's own annotation files, read as they ship, and its class lists.

    LOC_val_solution.csv    the localisation challenge's solution: a header ``ImageId,
                            PredictionString``, then one line per image whose string holds groups
                            of five tokens, ``SYNSET x_min y_min x_max y_max``, one per box
    ILSVRC XML folder       one VOC-style file per image (ILSVRC2012 bounding boxes): ``<size>``
                            with ``<width>``/``<height>``, one ``<object>`` per box with
                            ``<name>`` (the synset) and ``<bndbox>`` (``xmin ymin xmax ymax``)
    LOC_synset_mapping.txt  the class order: ``n01440764 tench, Tinca tinca`` per line (line i
                            is class index i, torchvision's order); a file of one name per line
                            is a class list too

Both annotation files become the annotations table (``ANNOTATIONS_TYPES``): image_id (the CSV's
ImageId, the XML file's stem), label (the class of the image's first box: ImageNet's validation
images have one class), boxes (every box with its class index) and, from XML, the height and
width the boxes refer to (the decode stage scales boxes to the decoded image where it differs).

What the real files hold that would give a silently wrong box is counted
(``AnnotationCounts``) and reported in the job's summary and run manifest: a box with min > max
is dropped, a box partly outside its XML's ``<size>`` is clipped to it (wholly outside: dropped),
an ``<object>`` whose name is not a synset (``n`` and eight digits) is dropped. A synset that is
not in the class list is a config error listing every such synset, since its index is unknown.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from legx.pipeline.engine.schema import BOXES_TYPE

LOC_CSV_HEADER = "ImageId,PredictionString"
PARQUET_MAGIC = b"PAR1"
SYNSET_PATTERN = re.compile(r"^n\d{8}$")
XML_READ_THREADS = 32

ANNOTATIONS_TYPES = pa.schema([
    ("image_id", pa.string()),
    ("label", pa.int64()),
    ("boxes", BOXES_TYPE),
    ("height", pa.int32()),
    ("width", pa.int32()),
])


class AnnotationFileError(ValueError):
    """An annotations or classes file that cannot be read as any of the accepted formats; the
    message says what was found and what was expected."""


@dataclass(frozen=True)
class ClassList:
    """The class order: ``keys`` (synsets or folder names, line i = class index i) and their
    ``names`` (a synset mapping's descriptions up to the first comma; None for a plain list)."""

    keys: tuple[str, ...]
    names: tuple[str, ...] | None

    def index(self) -> dict[str, int]:
        return {key: position for position, key in enumerate(self.keys)}


def parse_class_list(text: str) -> ClassList:
    """A ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``) or a file of one name
    per line. A line is a mapping line when its first word is a synset followed by a
    description; every line must then be one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    split = [line.split(maxsplit=1) for line in lines]
    mapping = bool(lines) and all(len(parts) == 2 and SYNSET_PATTERN.match(parts[0]) for parts in split)
    if mapping:
        return ClassList(tuple(parts[0] for parts in split),
                         tuple(parts[1].split(",")[0].strip() for parts in split))
    return ClassList(tuple(lines), None)


@dataclass
class AnnotationCounts:
    """What reading the annotations found: images, those with a label and with boxes, boxes
    kept, boxes clipped to their image's size (XML), boxes dropped (min > max, wholly outside
    the image) and objects dropped because their name is not a synset."""

    format: str
    images: int = 0
    images_with_label: int = 0
    images_with_boxes: int = 0
    boxes: int = 0
    boxes_clipped: int = 0
    boxes_dropped: int = 0
    objects_not_synset: int = 0
    # Synsets found in the file but absent from the class list: a config error.
    unknown_synsets: set[str] = field(default_factory=set)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("unknown_synsets")
        return data


def sniff(filesystem: pafs.FileSystem, path: str) -> str:
    """The annotation format of ``path`` by content: 'xml_folder' for a folder, else from the
    first bytes: 'parquet' (``PAR1``), 'loc_csv' (the ``ImageId,PredictionString`` header) or
    'xml' (one XML file). Raises AnnotationFileError for anything else."""
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        return "xml_folder"
    with filesystem.open_input_stream(path) as stream:
        head = stream.read(64)
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if text.startswith(LOC_CSV_HEADER):
        return "loc_csv"
    if text.startswith("<"):
        return "xml"
    raise AnnotationFileError(
        f"starts with {head[:24]!r}: expected Parquet (PAR1), a LOC_val_solution.csv (header"
        f" {LOC_CSV_HEADER!r}), an ILSVRC XML file or a folder of them"
    )


class _Boxes:
    """Collects the rows of the annotations table and the counts."""

    def __init__(self, form: str, classes: ClassList) -> None:
        self.index = classes.index()
        self.counts = AnnotationCounts(format=form)
        self.rows: dict[str, list] = {name: [] for name in ANNOTATIONS_TYPES.names}

    def box(self, name: str, corners: list[float], size: tuple[int, int] | None) -> dict | None:
        """One box of class ``name`` (a synset), clipped to ``size`` (height, width) where known;
        None (counted) where it cannot be kept."""
        if not SYNSET_PATTERN.match(name):
            self.counts.objects_not_synset += 1
            return None
        if name not in self.index:
            self.counts.unknown_synsets.add(name)
            return None
        x_min, y_min, x_max, y_max = corners
        if x_min > x_max or y_min > y_max:
            self.counts.boxes_dropped += 1
            return None
        if size is not None:
            height, width = size
            clipped = [min(max(x_min, 0), width - 1), min(max(y_min, 0), height - 1),
                       min(max(x_max, 0), width - 1), min(max(y_max, 0), height - 1)]
            if x_max < 0 or y_max < 0 or x_min > width - 1 or y_min > height - 1:
                self.counts.boxes_dropped += 1
                return None
            if clipped != [x_min, y_min, x_max, y_max]:
                self.counts.boxes_clipped += 1
                x_min, y_min, x_max, y_max = clipped
        return {"x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max, "label": self.index[name]}

    def image(self, image_id: str, boxes: list[dict], size: tuple[int, int] | None) -> None:
        self.counts.images += 1
        self.counts.images_with_label += bool(boxes)
        self.counts.images_with_boxes += bool(boxes)
        self.counts.boxes += len(boxes)
        self.rows["image_id"].append(image_id)
        self.rows["label"].append(boxes[0]["label"] if boxes else None)
        self.rows["boxes"].append(boxes or None)
        self.rows["height"].append(size[0] if size else None)
        self.rows["width"].append(size[1] if size else None)

    def table(self) -> pa.Table:
        return pa.table(self.rows, schema=ANNOTATIONS_TYPES)


def read_loc_csv(data: bytes, classes: ClassList) -> tuple[pa.Table, AnnotationCounts]:
    """A ``LOC_val_solution.csv`` -> (annotations table, counts). Its coordinates refer to the
    image as it decodes (the file gives no size)."""
    collected = _Boxes("loc_csv", classes)
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    header = next(reader, None)
    if header is None or [cell.strip() for cell in header[:2]] != LOC_CSV_HEADER.split(","):
        raise AnnotationFileError(f"header is {header}, expected {LOC_CSV_HEADER!r}")
    for line_number, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != 2:
            raise AnnotationFileError(f"line {line_number} has {len(cells)} fields, expected 2 ({LOC_CSV_HEADER})")
        tokens = cells[1].split()
        if len(tokens) % 5:
            raise AnnotationFileError(
                f"line {line_number} ({cells[0]}): {len(tokens)} tokens in PredictionString, expected"
                " groups of five (SYNSET x_min y_min x_max y_max)"
            )
        boxes = []
        for start in range(0, len(tokens), 5):
            try:
                corners = [float(token) for token in tokens[start + 1 : start + 5]]
            except ValueError:
                raise AnnotationFileError(
                    f"line {line_number} ({cells[0]}): box {tokens[start:start + 5]} has a coordinate"
                    " that is not a number"
                ) from None
            box = collected.box(tokens[start], corners, None)
            if box is not None:
                boxes.append(box)
        collected.image(cells[0].strip(), boxes, None)
    return collected.table(), collected.counts


def parse_voc_xml(data: bytes, source: str) -> tuple[tuple[int, int] | None, list[tuple[str, list[float]]]]:
    """One ILSVRC / VOC XML file -> ((height, width) of ``<size>`` or None, [(name, corners)])."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise AnnotationFileError(f"{source}: not well-formed XML ({error})") from None
    size = None
    width, height = root.findtext("size/width"), root.findtext("size/height")
    try:
        if width and height and int(width) > 0 and int(height) > 0:
            size = (int(height), int(width))
        objects = [
            ((obj.findtext("name") or "").strip(),
             [float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")])
            for obj in root.iter("object")
        ]
    except (TypeError, ValueError):
        raise AnnotationFileError(f"{source}: a <size> or <bndbox> value is missing or not a number") from None
    return size, objects


def read_xml_files(filesystem: pafs.FileSystem, paths: list[str], classes: ClassList) -> tuple[pa.Table, AnnotationCounts]:
    """ILSVRC XML files -> (annotations table, counts); image_id = each file's stem."""
    collected = _Boxes("xml_folder" if len(paths) != 1 else "xml", classes)

    def read(path: str) -> bytes:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()

    with ThreadPoolExecutor(max_workers=XML_READ_THREADS) as pool:
        contents = list(pool.map(read, paths))
    for path, data in zip(paths, contents):
        size, objects = parse_voc_xml(data, posixpath.basename(path))
        boxes = [box for name, corners in objects if (box := collected.box(name, corners, size)) is not None]
        collected.image(posixpath.splitext(posixpath.basename(path))[0], boxes, size)
    return collected.table(), collected.counts


def xml_paths(filesystem: pafs.FileSystem, folder: str) -> list[str]:
    """The .xml files under ``folder`` (recursive, sorted)."""
    infos = filesystem.get_file_info(pafs.FileSelector(folder, recursive=True))
    return sorted(info.path for info in infos
                  if info.type == pafs.FileType.File and info.base_name.lower().endswith(".xml"))


def read_class_list(uri: str, storage) -> ClassList:
    """The ``classes`` file at ``uri`` (``parse_class_list``). Raises AnnotationFileError when
    it cannot be read or holds no class."""
    from legx.pipeline.engine.storage import read_bytes

    try:
        text = read_bytes(uri, storage).decode("utf-8-sig")
    except (OSError, ValueError) as error:
        raise AnnotationFileError(f"cannot read it: {error}") from None
    classes = parse_class_list(text)
    if not classes.keys:
        raise AnnotationFileError("holds no class (expected one class per line)")
    return classes
