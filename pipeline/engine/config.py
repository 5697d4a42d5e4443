"""The job config: typed, read from YAML plus ``--set key=value`` overrides, checked up front.

A config file is a YAML mapping of the ``JobConfig`` fields; the parameters of a method sit
under the method's name, e.g.::

    input: s3://bucket/imagenet/val
    output: s3://bucket/legx/resnet50
    model: torchvision:resnet50
    methods: [leg, leg-tv]
    leg: {n_samples: 2000, grid_size: 28}
    leg-tv: {n_samples: 2000, grid_size: 28, lambdas: [0.1, 0.3]}
    annotations: s3://bucket/imagenet/LOC_val_solution.csv
    classes: s3://bucket/imagenet/LOC_synset_mapping.txt
    storage: {region: eu-west-1}

Overrides use dotted keys and YAML values: ``--set leg.n_samples=500``,
``--set methods=[leg,grad-cam]``. Every problem is reported at once, before Ray starts.
Credentials are never config fields: they come from the standard AWS chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from legx import methods
from legx.methods.models.input_size import declared_input_size
from legx.methods.models.precisions import PRECISIONS
from legx.pipeline.engine.method_checks import method_problems, metric_problems
from legx.pipeline.engine.sources.registry import FORMATS
from legx.pipeline.engine.storage import StorageOptions, scheme_of, strip_userinfo

INPUT_FORMATS = ("auto", *FORMATS)
RESIZE_MODES = ("crop", "stretch")
TARGET_MODES = ("top1", "label")
GPU_MODES = ("auto", "always", "never")
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CREDENTIAL_WORDS = ("secret", "password", "token", "access_key", "credential")


class ConfigError(ValueError):
    """One or more problems in a job config; ``problems`` lists them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid job config:\n  - " + "\n  - ".join(problems))


@dataclass
class JobConfig:
    """Everything one job needs. ``params`` maps a method name to its constructor parameters."""

    input: str
    output: str = "./legx-output"
    model: str = "demo"
    methods: list[str] = field(default_factory=lambda: ["leg", "leg-tv"])
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    metric_options: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    # Source
    input_format: str = "auto"
    # Labels and ground truth joined to the images by image_id (else by the id's file stem):
    # legx's Parquet (image_id, label, box or boxes, height, width, mask), ImageNet's
    # LOC_val_solution.csv, or a folder (or one file) of ILSVRC XML bounding-box files, local or
    # in object storage; recognised by content. The ImageNet files need ``classes``.
    annotations: str | None = None
    # The class order, line i = class index i: LOC_synset_mapping.txt (``n01440764 tench, ...``;
    # its descriptions name the rows' classes) or one name per line (a folder's class folders).
    # Must list exactly the model's classes.
    classes: str | None = None
    image_column: str | None = None
    id_column: str | None = None
    label_column: str | None = None
    limit: int | None = None
    # Preprocessing: image_size defaults to the side the model declares (methods.input_size)
    image_size: int | None = None
    resize: str = "crop"
    target: str = "top1"
    # Execution
    batch_size: int = 8
    decode_batch_size: int | None = None
    solve_batch_size: int | None = None
    rows_per_file: int = 2000
    actors: int = 1
    # None: chosen from the cluster's CPUs when the job starts (``legx.pipeline.engine.resources``).
    actor_cpus: float | None = None
    actor_threads: int | None = None
    gpu: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    storage: StorageOptions = field(default_factory=StorageOptions)
    # A local output path on a multi-node cluster is refused (each node would write its part to
    # its own disk) unless the path is one every node mounts (NFS and the like): say so here.
    output_shared: bool = False

    def public_dict(self) -> dict[str, Any]:
        """The config as written to the run manifest (no secrets: the endpoint loses any
        user:password part)."""
        data = dataclasses.asdict(self)
        endpoint = self.storage.endpoint_url
        data["storage"]["endpoint_url"] = strip_userinfo(endpoint) if endpoint else None
        return data

    def method_params(self, name: str) -> dict[str, Any]:
        return dict(self.params.get(name, {}))


_FIELDS = {f.name: f for f in dataclasses.fields(JobConfig)}
_STORAGE_FIELDS = {f.name for f in dataclasses.fields(StorageOptions)}


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError([f"override {text!r} is not of the form key=value"])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"override {text!r} has an empty key"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError([f"override {text!r}: value is not valid YAML ({error})"]) from error
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with dotted-key overrides applied (nested mappings created)."""
    merged = json.loads(json.dumps(data, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return merged


def load_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML ({error})"]) from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping of config keys, got {type(data).__name__}"])
    return data


def build_config(data: dict[str, Any]) -> JobConfig:
    """Validate a raw mapping and build the ``JobConfig``; raises ConfigError listing every
    problem found."""
    problems: list[str] = []
    known_methods = methods.available()
    values: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in known_methods:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                problems.append(f"{key}: method parameters must be a mapping, got {value!r}")
            else:
                params[key] = dict(value)
        elif key == "params":
            problems.append("params: put method parameters under the method's name, e.g. 'leg: {n_samples: 500}'")
        elif key in _FIELDS:
            values[key] = value
        elif any(word in key.lower() for word in _CREDENTIAL_WORDS):
            problems.append(
                f"{key}: credentials are never read from the config; use the standard AWS chain"
                " (environment variables, ~/.aws, instance roles)"
            )
        else:
            problems.append(
                f"unknown key {key!r}; known keys: {', '.join(sorted(set(_FIELDS) - {'params'}))}, or a method name"
                f" ({', '.join(known_methods)})"
            )

    storage = values.pop("storage", None) or {}
    if not isinstance(storage, dict):
        problems.append(f"storage: expected a mapping, got {storage!r}")
        storage = {}
    for key in list(storage):
        if key not in _STORAGE_FIELDS:
            hint = (
                "credentials are never read from the config; use the standard AWS chain"
                if any(word in key.lower() for word in _CREDENTIAL_WORDS)
                else f"known keys: {', '.join(sorted(_STORAGE_FIELDS))}"
            )
            problems.append(f"storage.{key}: unknown key; {hint}")
            storage.pop(key)

    if "input" not in values or values["input"] in (None, ""):
        problems.append("input: required (a local folder, s3://bucket/prefix or gs://bucket/prefix)")

    config = JobConfig(input=str(values.get("input") or ""))
    for key, value in values.items():
        if key == "input":
            continue
        problem = _check_field(key, value)
        if problem:
            problems.append(problem)
        else:
            setattr(config, key, _coerce(key, value))
    max_attempts = storage.get("max_attempts", StorageOptions.max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        problems.append(f"storage.max_attempts: expected an integer >= 1, got {max_attempts!r}")
        max_attempts = StorageOptions.max_attempts
    config.storage = StorageOptions(
        endpoint_url=_optional_str(storage.get("endpoint_url")),
        region=_optional_str(storage.get("region")),
        anonymous=bool(storage.get("anonymous", False)),
        max_attempts=max_attempts,
    )
    config.params = params
    if config.image_size is None:
        config.image_size = declared_input_size(config.model)
        if config.image_size is None:
            problems.append(
                f"image_size: the model {config.model!r} declares no input size (a TorchScript archive"
                " or checkpoint is read by the job's actors only); set image_size to the side it"
                " was trained on, e.g. image_size: 224"
            )
    problems.extend(_check_config(config, known_methods))
    if problems:
        raise ConfigError(problems)
    if not config.run_id:
        config.run_id = default_run_id(config)
    return config


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _check_field(key: str, value: Any) -> str | None:
    kind = _FIELDS[key].type
    if key in ("methods", "metrics"):
        if isinstance(value, str):
            return None  # 'leg,leg-tv' is accepted and split
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return f"{key}: expected a list of names, got {value!r}"
        return None
    if kind in ("int", "int | None"):
        if value is None and "None" in kind:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{key}: expected an integer, got {value!r}"
        if value < 1:
            return f"{key}: must be >= 1, got {value}"
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            return f"{key}: expected true or false, got {value!r}"
        return None
    if kind in ("float", "float | None"):
        if value is None and "None" in kind:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            return f"{key}: expected a positive number, got {value!r}"
        return None
    if kind in ("str", "str | None"):
        if value is None and "None" in kind:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            return f"{key}: expected a string, got {value!r}"
        return None
    return None


def _coerce(key: str, value: Any) -> Any:
    if key in ("methods", "metrics") and isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if _FIELDS[key].type in ("str", "str | None") and value is not None:
        return str(value)
    if _FIELDS[key].type in ("float", "float | None") and value is not None:
        return float(value)
    return value


def _check_choice(problems: list[str], key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        problems.append(f"{key}: must be one of {', '.join(choices)}, got {value!r}")


def _check_uri(problems: list[str], key: str, uri: str | None) -> None:
    if not uri:
        return
    try:
        scheme_of(uri)
    except ValueError as error:
        problems.append(f"{key}: {error}")


def _check_config(config: JobConfig, known_methods: list[str]) -> list[str]:
    problems: list[str] = []
    for key in ("input", "output", "annotations", "classes"):
        _check_uri(problems, key, getattr(config, key))
    _check_choice(problems, "input_format", config.input_format, INPUT_FORMATS)
    _check_choice(problems, "resize", config.resize, RESIZE_MODES)
    _check_choice(problems, "target", config.target, TARGET_MODES)
    _check_choice(problems, "gpu", config.gpu, GPU_MODES)
    _check_choice(problems, "precision", config.precision, PRECISIONS)
    if config.run_id and not _RUN_ID_PATTERN.match(config.run_id):
        problems.append(
            f"run_id: {config.run_id!r} must be 1-128 characters of letters, digits, '.', '_'"
            " or '-', starting with a letter or digit"
        )
    if not config.methods:
        problems.append("methods: name at least one method")
    if len(set(config.methods)) != len(config.methods):
        problems.append(f"methods: listed twice: {config.methods}")
    for name in config.methods:
        if name not in known_methods:
            problems.append(f"methods: unknown method {name!r}; available: {', '.join(known_methods)}")
    problems.extend(method_problems(config.methods, config.params))
    problems.extend(metric_problems(config.metrics, config.metric_options))
    return problems


def default_run_id(config: JobConfig) -> str:
    """UTC timestamp plus a short hash of the config: sortable and unique per job."""
    digest = hashlib.sha256(
        json.dumps(config.public_dict(), sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + digest


def load_config(path: str | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> JobConfig:
    """Config from an optional YAML file (local path or URI) on top of ``base``, with
    overrides applied last."""
    data: dict[str, Any] = dict(base or {})
    if path:
        data.update(load_yaml(_read_text(path), path))
    return build_config(apply_overrides(data, overrides or []))


def _read_text(path: str) -> str:
    from legx.pipeline.engine.storage import read_bytes

    try:
        return read_bytes(path, StorageOptions()).decode("utf-8")
    except (OSError, ValueError) as error:
        raise ConfigError([f"cannot read config {path!r}: {error}"]) from error
