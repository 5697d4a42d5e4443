"""The cluster deployment files in cluster/, checked without a cluster, Docker or a running Ray.

* every YAML document parses; the RayJob and RayCronJob carry the fields KubeRay needs (an
  entrypoint, a head group, a GPU worker group with ``nvidia.com/gpu`` limits, a 5-field cron
  schedule, a job template); the launcher config passes Ray's own launcher validation;
* every command a manifest runs is a real ``legx`` command line: parsed by the CLI's own
  ``legx.pipeline.cli.build_parser``, and for ``legx run`` resolved into a validated job config with
  the ConfigMap the command reads (``legx.pipeline.cli.run.resolve_config``);
* an entrypoint survives KubeRay's submitter shell (no bare ``&&`` or ``$VAR`` in it);
* the example config validates with ``legx.pipeline.engine.config.load_config`` and equals its ConfigMap;
* the Dockerfile (Docker cannot run here) is checked statically;
* no credentials: key patterns, password/secret values, secret-named env vars with literal values.

The checkers are plain functions with known-bad inputs of their own, so each can be seen to fail.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from legx.pipeline.cli.main import SUBCOMMANDS, build_parser
from legx.pipeline.cli.run import resolve_config
from legx.pipeline.engine.config import load_config
from legx.pipeline.engine.storage import scheme_of

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
RAYJOB = CLUSTER / "rayjob-imagenet.yaml"
RAYCRONJOB = CLUSTER / "raycronjob-audit.yaml"
EXAMPLE_CONFIG = CLUSTER / "imagenet.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
DOCKERIGNORE = CLUSTER / "Dockerfile.dockerignore"
MANIFESTS = (RAYJOB, RAYCRONJOB)

SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ">", ">>", "<", "(", ")"}
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
CREDENTIAL_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "secret access key value": re.compile(r"secret_access_key\s*[:=]\s*['\"]?[^\s'\"#]+", re.IGNORECASE),
    "password value": re.compile(r"passw(or)?d\s*[:=]\s*['\"]?[^\s'\"#]+", re.IGNORECASE),
    "token value": re.compile(r"(auth_token|api_key|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/_=-]{20,}", re.IGNORECASE),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "credentials in a URL": re.compile(r"[a-z0-9+.-]+://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE),
}


# ---------------------------------------------------------------------------------------------
# checkers


def load_documents(path: Path) -> list[dict[str, Any]]:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert documents, f"{path.name} holds no YAML document"
    assert all(isinstance(document, dict) for document in documents), path.name
    return documents


def find_credentials(text: str) -> list[str]:
    """Names of the credential patterns found in ``text``."""
    return [name for name, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(text)]


def literal_secret_env(pod_spec: dict[str, Any]) -> list[str]:
    """Env vars of a pod whose names say secret but whose values are written inline."""
    return [
        f"{container['name']}.{entry['name']}"
        for container in pod_spec.get("containers", [])
        for entry in container.get("env", [])
        if SECRET_NAME.search(entry["name"]) and "value" in entry
    ]


_CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_NAMES = (
    {},
    {},
    {},
    {name: number for number, name in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)},
    {name: number for number, name in enumerate("SUN MON TUE WED THU FRI SAT".split())},
)


def cron_is_valid(expression: str) -> bool:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week), each
    field a comma list of *, N, N-M, with an optional /STEP; month and weekday names allowed."""
    fields = expression.split()
    if len(fields) != 5:
        return False
    for field, (low, high), names in zip(fields, _CRON_BOUNDS, _CRON_NAMES):
        for part in field.split(","):
            match = re.fullmatch(r"(\*|\w+(?:-\w+)?)(?:/(\d+))?", part)
            if not match:
                return False
            span, step = match.groups()
            if step is not None and int(step) < 1:
                return False
            if span == "*":
                continue
            values = [names.get(value.upper(), value) for value in span.split("-")]
            if not all(isinstance(value, int) or value.isdigit() for value in values):
                return False
            numbers = [int(value) for value in values]
            if not all(low <= number <= high for number in numbers) or numbers != sorted(numbers):
                return False
    return True


def submitter_shell_problems(entrypoint: str) -> list[str]:
    """What KubeRay's submitter shell would take for itself: it pastes the entrypoint after
    ``ray job submit ... --`` into ``/bin/sh -c``, so shell operators and ``$`` expansions
    outside single quotes run or expand in the submitter pod, not in the Ray job."""
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    problems = [f"shell operator {token!r}" for token in lexer if token in SHELL_OPERATORS]
    outside_single_quotes = re.sub(r"'[^']*'", "", entrypoint)
    if "$" in outside_single_quotes or "`" in outside_single_quotes:
        problems.append("variable or command substitution outside single quotes")
    return problems


def _expand(word: str, env: dict[str, str]) -> str:
    if "$(" in word or "`" in word:
        raise ValueError(f"command substitution in {word!r}")

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise KeyError(f"${name} is not set in the job's environment")
        return env[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)


def entrypoint_commands(entrypoint: str, env: dict[str, str]) -> list[list[str]]:
    """The command lines an entrypoint runs on the head: itself, or the ``&&``-chained commands
    of its ``bash -c`` script, with the job's environment variables expanded."""
    words = shlex.split(entrypoint)
    if words[:2] not in (["bash", "-c"], ["sh", "-c"]):
        return [[_expand(word, env) for word in words]]
    assert len(words) == 3, f"bash -c takes one script, got {words[2:]}"
    lexer = shlex.shlex(words[2], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            commands.append([])
        elif token in SHELL_OPERATORS or set(token) <= set("();<>|&"):
            raise ValueError(f"only '&&' chains commands here (a failed job must stop the chain), got {token!r}")
        else:
            commands[-1].append(_expand(token, env))
    return commands


def parse_legx(words: list[str]):
    """``words`` parsed by the legx CLI's own parser; a usage error fails the test with the
    CLI's message."""
    assert words and words[0] == "legx", f"not a legx command: {words}"
    assert len(words) > 1 and words[1] in SUBCOMMANDS, f"unknown legx subcommand in {words}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return build_parser(words[1]).parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"`{shlex.join(words)}` is not a valid legx command line: {errors.getvalue().strip()}")


def mounted_files(pod_spec: dict[str, Any], container_name: str, config_maps: dict[str, dict]) -> dict[str, str]:
    """Absolute path -> text of every ConfigMap key mounted into a container."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    container = next(c for c in pod_spec["containers"] if c["name"] == container_name)
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        assert source["name"] in config_maps, f"ConfigMap {source['name']!r} is not in the manifest"
        for key, text in config_maps[source["name"]]["data"].items():
            files[f"{mount['mountPath'].rstrip('/')}/{key}"] = text
    return files


def check_legx_commands(commands: list[list[str]], files: dict[str, str], tmp_path: Path) -> list:
    """Parse every command; resolve every ``legx run`` into its job config, reading the config
    file from ``files`` (path -> text) as the command would on the cluster."""
    configs = []
    for words in commands:
        args = parse_legx(words)
        if args.command == "run":
            if args.config is not None:
                assert args.config in files, f"{args.config} is not provided to the job ({sorted(files)})"
                local = tmp_path / f"config-{len(configs)}.yaml"
                local.write_text(files[args.config])
                args.config = str(local)
            config, embedded = resolve_config(args)
            assert not embedded, "a cluster job must name its input, not run the embedded demo"
            configs.append(config)
        elif args.command == "compare":
            for uri in (args.output_a, args.output_b, args.out):
                assert scheme_of(uri) in ("s3", "gs"), f"compare on a cluster must use object storage: {uri}"
    return configs


def pod_specs(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [
        group["template"]["spec"] for group in cluster_spec["workerGroupSpecs"]
    ]


def gpu_groups(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        group
        for group in cluster_spec["workerGroupSpecs"]
        if any(
            int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
            for container in group["template"]["spec"]["containers"]
        )
    ]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def dockerfile_ray_version() -> str:
    match = re.search(r"^ARG RAY_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "cluster/Dockerfile does not declare ARG RAY_VERSION=..."
    return match.group(1)


def _kind(path: Path, kind: str) -> dict[str, Any]:
    found = [document for document in load_documents(path) if document.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def _config_maps(path: Path) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in load_documents(path) if d.get("kind") == "ConfigMap"}


def _runtime_env(job_spec: dict[str, Any]) -> dict[str, str]:
    runtime_env = yaml.safe_load(job_spec.get("runtimeEnvYAML") or "") or {}
    return {name: str(value) for name, value in (runtime_env.get("env_vars") or {}).items()}


# ---------------------------------------------------------------------------------------------
# the checkers themselves fail on known-bad input


def test_checkers_reject_known_bad_inputs():
    fake_key_id = "AKIA" + "IOSFODNN7" + "EXAMPLE"
    assert find_credentials(f"aws_access_key_id: {fake_key_id}") == ["AWS access key id"]
    assert "secret access key value" in find_credentials("aws_secret_access_key = abc/DEF+ghi")
    assert "password value" in find_credentials("password: hunter2")
    assert "token value" in find_credentials("RAY_AUTH_TOKEN=" + "x" * 32)
    assert "credentials in a URL" in find_credentials("endpoint: http://user:pw@minio:9000")
    assert find_credentials("authOptions: {mode: token}\n~/.ray/auth_token: ~/.ray/auth_token") == []

    pod = {"containers": [{"name": "c", "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"},
                                                 {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {}}]}]}
    assert literal_secret_env(pod) == ["c.AWS_SECRET_ACCESS_KEY"]

    for good in ("0 3 * * 1", "*/15 0-6 1,15 * MON-FRI", "30 2 1 JAN-MAR/2 *"):
        assert cron_is_valid(good), good
    for bad in ("* * * *", "61 * * * *", "0 3 * * 7", "0 3 * * 1 2024", "@weekly", "5-1 * * * *", "*/0 * * * *"):
        assert not cron_is_valid(bad), bad

    assert submitter_shell_problems("legx run /config/a.yaml && legx compare s3://a/x s3://a/y")
    assert submitter_shell_problems("legx run --run-id $VERSION /config/a.yaml")
    assert submitter_shell_problems("legx run /config/a.yaml > log.txt")
    assert submitter_shell_problems("bash -c 'legx run \"$X\" && legx compare a b'") == []

    with pytest.raises(KeyError):
        entrypoint_commands("bash -c 'legx run --run-id \"$UNSET\" /c.yaml'", {})
    with pytest.raises(ValueError):
        entrypoint_commands("bash -c 'legx run /c.yaml; legx compare a b'", {})
    for bad_command in (["legx", "runn", "x.yaml"], ["legx", "run", "--samples", "many"],
                        ["legx", "compare", "s3://b/only-one"], ["python", "-m", "legx"]):
        with pytest.raises((pytest.fail.Exception, AssertionError)):
            parse_legx(bad_command)


# ---------------------------------------------------------------------------------------------
# every file parses; no credentials anywhere in cluster/


def test_every_yaml_file_parses():
    names = sorted(path.name for path in CLUSTER.glob("*.yaml"))
    assert names == ["imagenet.yaml", "ray-cluster.yaml", "raycronjob-audit.yaml", "rayjob-imagenet.yaml"]
    for path in CLUSTER.glob("*.yaml"):
        load_documents(path)


def test_no_credentials_in_cluster_files():
    files = sorted(path for path in CLUSTER.iterdir() if path.is_file())
    assert DOCKERFILE in files and LAUNCHER in files
    for path in files:
        text = path.read_text()
        assert find_credentials(text) == [], f"{path.name}: {find_credentials(text)}"
        assert not re.search(r"RAY_AUTH_MODE\s*=\s*disabled", text), f"{path.name} disables Ray's token auth"
    for path in MANIFESTS:
        for document in load_documents(path):
            if document["kind"] == "ConfigMap":
                continue  # job configs: the config loader itself rejects credential keys
            job_spec = document["spec"].get("jobTemplate", document["spec"])
            assert not [name for name in _runtime_env(job_spec) if SECRET_NAME.search(name)], path.name
            for pod in pod_specs(job_spec["rayClusterSpec"]):
                assert literal_secret_env(pod) == [], f"{path.name}: {literal_secret_env(pod)}"


# ---------------------------------------------------------------------------------------------
# the example job config


def test_example_config_validates_with_the_config_loader():
    config = load_config(str(EXAMPLE_CONFIG))
    assert config.methods == ["leg", "leg-tv"]
    assert config.model == "torchvision:resnet50"
    assert scheme_of(config.input) == "s3" and scheme_of(config.output) == "s3"
    assert config.input.rstrip("/").endswith("imagenet/val")
    # A fixed run id is what makes a retried cluster job resume rather than start over.
    assert config.run_id == yaml.safe_load(EXAMPLE_CONFIG.read_text())["run_id"]
    # GPU workers autoscale from zero: the job must ask for GPUs, not detect them at start.
    assert config.gpu == "always"
    sampling = ("n_samples", "grid_size", "noise_level", "batch_size")
    assert {k: config.params["leg"][k] for k in sampling} == {k: config.params["leg-tv"][k] for k in sampling}


def test_rayjob_configmap_is_the_example_config():
    config_map = _config_maps(RAYJOB)["legx-imagenet-config"]
    assert yaml.safe_load(config_map["data"]["imagenet.yaml"]) == yaml.safe_load(EXAMPLE_CONFIG.read_text())


# ---------------------------------------------------------------------------------------------
# KubeRay RayJob


def test_rayjob_has_head_and_autoscaling_gpu_workers():
    rayjob = _kind(RAYJOB, "RayJob")
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    assert spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == dockerfile_ray_version()
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    groups = gpu_groups(cluster)
    assert groups, "no worker group requests nvidia.com/gpu"
    for group in groups:
        assert group["minReplicas"] == 0 < group["maxReplicas"], "GPU workers should autoscale from zero"
    assert cluster["enableInTreeAutoscaling"] is True


def test_rayjob_entrypoint_is_a_valid_legx_job(tmp_path):
    rayjob = _kind(RAYJOB, "RayJob")
    spec = rayjob["spec"]
    assert submitter_shell_problems(spec["entrypoint"]) == []
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    files = mounted_files(head, "ray-head", _config_maps(RAYJOB))
    commands = entrypoint_commands(spec["entrypoint"], _runtime_env(spec))
    assert [words[:2] for words in commands] == [["legx", "run"]]
    (config,) = check_legx_commands(commands, files, tmp_path)
    gpu_replicas = sum(group["maxReplicas"] for group in gpu_groups(spec["rayClusterSpec"]))
    assert config.actors <= gpu_replicas, "more model actors than GPU workers can ever exist"


# ---------------------------------------------------------------------------------------------
# KubeRay RayCronJob


def test_raycronjob_schedules_a_rayjob():
    cronjob = _kind(RAYCRONJOB, "RayCronJob")
    assert cronjob["apiVersion"] == "ray.io/v1"
    spec = cronjob["spec"]
    assert cron_is_valid(spec["schedule"]), spec["schedule"]
    template = spec["jobTemplate"]
    assert template["entrypoint"].strip()
    assert template["shutdownAfterJobFinishes"] is True
    cluster = template["rayClusterSpec"]
    assert cluster["rayVersion"] == dockerfile_ray_version()
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert gpu_groups(cluster)


def test_raycronjob_runs_the_new_version_then_compares_with_the_previous(tmp_path):
    template = _kind(RAYCRONJOB, "RayCronJob")["spec"]["jobTemplate"]
    assert submitter_shell_problems(template["entrypoint"]) == []
    env = _runtime_env(template)
    head = template["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    files = mounted_files(head, "ray-head", _config_maps(RAYCRONJOB))
    commands = entrypoint_commands(template["entrypoint"], env)
    assert [words[:2] for words in commands] == [["legx", "run"], ["legx", "compare"]]

    (config,) = check_legx_commands(commands, files, tmp_path)
    assert config.model == env["LEGX_MODEL"]
    assert config.run_id == env["LEGX_MODEL_VERSION"]
    assert config.gpu == "always"
    compare = parse_legx(commands[1])
    # Baseline first, the new run second: the comparison reads B - A as "what the new model changed".
    assert compare.output_a == env["LEGX_BASELINE_OUTPUT"]
    assert compare.output_b == config.output
    assert compare.output_a != compare.output_b


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher


def test_launcher_config_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load_documents(LAUNCHER)[0]
    validate_config(prepare_config(copy.deepcopy(raw)))
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "eight"
    with pytest.raises(Exception, match="eight"):
        validate_config(prepare_config(broken))


def test_launcher_has_cpu_head_autoscaling_gpu_and_cpu_workers_and_token_auth():
    config = load_documents(LAUNCHER)[0]
    assert config["provider"]["type"] == "aws"
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    assert node_types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = [name for name, node in node_types.items() if node["resources"].get("GPU", 0) >= 1]
    cpu_types = [name for name, node in node_types.items()
                 if name != config["head_node_type"] and node["resources"].get("GPU", 0) == 0]
    assert gpu_types and cpu_types
    for name in gpu_types + cpu_types:
        assert node_types[name]["min_workers"] == 0 < node_types[name]["max_workers"], name
    assert sum(node_types[name]["max_workers"] for name in gpu_types + cpu_types) <= config["max_workers"]
    assert load_config(str(EXAMPLE_CONFIG)).actors <= sum(node_types[n]["max_workers"] for n in gpu_types)
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(command for command in commands if "ray start" in command)
        assert "RAY_AUTH_MODE=token" in start
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_launcher_submit_examples_are_valid_legx_commands(tmp_path):
    text = LAUNCHER.read_text()
    submits = re.findall(r"^#\s+(ray job submit .*)$", text, re.MULTILINE)
    assert len(submits) >= 2, "the launcher config should show how to submit jobs"
    kinds = set()
    for line in submits:
        options, entrypoint = line.split(" -- ", 1)
        words = shlex.split(options)
        files = {}
        if "--working-dir" in words:
            folder = REPO / words[words.index("--working-dir") + 1]
            files = {path.name: path.read_text() for path in folder.glob("*.yaml")}
        commands = entrypoint_commands(entrypoint, {})
        check_legx_commands(commands, files, tmp_path)
        kinds.update(words[1] for words in commands)
    assert {"run", "compare"} <= kinds


# ---------------------------------------------------------------------------------------------
# one image everywhere; the Dockerfile, statically


def test_every_node_runs_the_same_image():
    images = {load_documents(LAUNCHER)[0]["docker"]["image"]}
    for path in MANIFESTS:
        for document in load_documents(path):
            if document["kind"] == "ConfigMap":
                continue
            job_spec = document["spec"].get("jobTemplate", document["spec"])
            for pod in pod_specs(job_spec["rayClusterSpec"]):
                images.update(container["image"] for container in pod["containers"])
                assert pod.get("serviceAccountName") == "legx", f"{path.name}: S3 access comes from the service account"
    assert len(images) == 1, images


def test_dockerfile_installs_the_repository_on_a_ray_gpu_image():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    names = [name for name, _ in instructions]
    assert "FROM" in names and all(name == "ARG" for name in names[: names.index("FROM")])
    base = dict(instructions)["FROM"].replace("${RAY_VERSION}", dockerfile_ray_version())
    assert re.fullmatch(r"rayproject/ray:\d+\.\d+\.\d+-py311-gpu", base), base
    assert "ENTRYPOINT" not in names and "CMD" not in names, "Ray's launcher and KubeRay start ray themselves"

    copied = {}
    for name, arguments in instructions:
        if name == "COPY":
            words = [word for word in arguments.split() if not word.startswith("--")]
            for source in words[:-1]:
                copied[source] = words[-1]
    assert {"pyproject.toml", "setup.py", "src", "README.md", "methods", "pipeline", "requirements"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    install = " ".join(arguments for name, arguments in instructions if name == "RUN" and "pip install" in arguments)
    assert any(destination.rstrip("/") in install for destination in copied.values()), "the copied repository is not pip-installed"
    lock = f"{copied['requirements'].rstrip('/')}/lock.txt"
    assert re.search(rf"(-c|--constraint)\s+{re.escape(lock)}\b", install), "the image must install the tested set (requirements/lock.txt)"

    ignored = DOCKERIGNORE.read_text().splitlines()
    for source in copied:
        assert f"!{source}" in ignored or f"!{source}/" in ignored, f"{source} is excluded from the build context"

    # torch/torchvision come pinned from pyproject.toml; the Dockerfile must not override them.
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    assert not re.search(r"\btorch(vision)?\s*[=<>~!]=", install)

    for name, arguments in instructions:
        if name in ("ENV", "ARG"):
            variable = re.split(r"[=\s]", arguments, maxsplit=1)[0]
            assert not SECRET_NAME.search(variable), f"{name} {variable}: credentials do not belong in an image"
            assert not variable.startswith("AWS_"), f"{name} {variable}"
