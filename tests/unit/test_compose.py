"""docker-compose.yml, Dockerfile and .dockerignore agree with the code (no Docker needed).

The compose file is parsed with pyyaml; ``${VAR...}`` placeholders are substituted the
way ``docker compose`` does, with sample values for variables that have no default.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import pytest
import yaml

from streams.settings import ENV_PREFIX, Settings
from streams.tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SETTING_NAMES = {Settings.env_name(f.name) for f in dataclasses.fields(Settings)}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "REQUIREPASS")
SAMPLE_SECRET = "sample-secret-value"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt}
PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
# ${VAR}, required ${VAR:?msg}, or an empty default ${VAR:-}: never a literal value or default.
SECRET_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}")


def _substitute(value: str, environ: Mapping[str, str]) -> str:
    """Compose interpolation of one string (``$$`` is a literal ``$``)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        present = name in environ and (environ[name] != "" or not (op or "").startswith(":"))
        if op in ("-", ":-"):
            return environ[name] if present else arg
        if op in ("+", ":+"):
            return arg if present else ""
        if op in ("?", ":?"):
            if not present:
                raise KeyError(f"compose would stop: {name}: {arg}")
            return environ[name]
        return environ.get(name, "")

    parts = value.split("$$")
    return "$".join(PLACEHOLDER.sub(one, part) for part in parts)


def _interpolate(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _substitute(node, environ)
    if isinstance(node, dict):
        return {k: _interpolate(v, environ) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, environ) for v in node]
    return node


def _required_variables(text: str) -> set[str]:
    return {m["name"] for m in PLACEHOLDER.finditer(text) if m["op"] in (None, "?", ":?")}


def _sample_environ(text: str) -> dict[str, str]:
    """Values for the variables compose requires (the others keep their defaults)."""
    return {name: SAMPLE_SECRET if any(w in name for w in SECRET_WORDS) else f"sample-{name.lower()}"
            for name in _required_variables(text)}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The compose file as written (placeholders not substituted)."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and "services" in doc
    return doc


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it with only the required variables set."""
    return _interpolate(raw, _sample_environ(COMPOSE_FILE.read_text(encoding="utf-8")))


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (mapping or ``KEY=value`` list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _streamrec_services(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the streamrec image (built from the Dockerfile)."""
    return {name: s for name, s in doc["services"].items() if "build" in s}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for part in value.split(","):
        name, address = part.strip().split("://", 1)
        host, port = address.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


def _ports(service: Mapping[str, Any]) -> Iterator[tuple[str | None, str, str]]:
    """(host_ip, published, target) of every published port, short or long syntax."""
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            yield entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])
            continue
        spec = str(entry).split("/", 1)[0]
        if spec.startswith("["):  # [::1]:8080:80
            host_ip, rest = spec[1:].split("]:", 1)
            published, target = rest.split(":", 1)
            yield host_ip, published, target
            continue
        pieces = spec.split(":")
        if len(pieces) == 3:
            yield pieces[0], pieces[1], pieces[2]
        elif len(pieces) == 2:
            yield None, pieces[0], pieces[1]
        else:
            yield None, "", pieces[0]


# --- settings ------------------------------------------------------------------------------


def _strings(node: Any) -> Iterator[str]:
    """Every key and scalar of a parsed YAML document (comments are not part of it)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif node is not None:
        yield str(node)


def test_every_streamrec_variable_is_a_setting(raw: dict[str, Any]) -> None:
    """Environment keys and ${...} references alike: a misspelt name would be silently ignored."""
    used = {name for s in _strings(raw) for name in re.findall(rf"\b{ENV_PREFIX}[A-Z0-9_]+", s)}
    assert f"{ENV_PREFIX}BROKER_URL" in used
    unknown = sorted(used - SETTING_NAMES)
    assert not unknown, f"not settings of streams.settings.Settings: {unknown}"


@pytest.mark.parametrize("service_name", ["worker", "producer", "metrics"])
def test_service_environment_builds_settings(compose: dict[str, Any], service_name: str) -> None:
    env = _env(compose["services"][service_name])
    assert not [k for k in env if not k.startswith(ENV_PREFIX)], "streamrec containers get STREAMREC_* only"
    settings = Settings.from_env(env)
    assert settings.redis_password == SAMPLE_SECRET
    assert settings.replication_factor == 1


def test_defaults_in_compose_are_valid_settings(raw: dict[str, Any]) -> None:
    """Every ``${STREAMREC_X:-default}`` default parses as that setting."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for match in PLACEHOLDER.finditer(text):
        if match["name"].startswith(ENV_PREFIX) and match["op"] in ("-", ":-"):
            Settings.from_env({match["name"]: match["arg"]})


def test_streamrec_services_share_one_environment(raw: dict[str, Any], compose: dict[str, Any]) -> None:
    """One anchor (x-streamrec-env) feeds every streamrec container: same topics, keys, broker."""
    assert "x-streamrec-env" in raw
    services = _streamrec_services(compose)
    assert set(services) >= {"worker", "producer", "metrics"}
    envs = [_env(s) for s in services.values()]
    assert all(env == envs[0] for env in envs)
    assert envs[0] == _env({"environment": compose["x-streamrec-env"]})


def test_topic_prefix_is_the_default_or_shared(compose: dict[str, Any]) -> None:
    prefixes = {_env(s).get("STREAMREC_TOPIC_PREFIX", Settings().topic_prefix)
                for s in _streamrec_services(compose).values()}
    assert len(prefixes) == 1
    assert prefixes == {Settings().topic_prefix}  # without overrides, the Settings default


def test_partitions_match_the_broker_default(compose: dict[str, Any]) -> None:
    """Topics the broker auto-creates get the partition count the worker expects."""
    worker = Settings.from_env(_env(compose["services"]["worker"]))
    kafka_env = _env(compose["services"]["kafka"])
    assert int(kafka_env["KAFKA_NUM_PARTITIONS"]) == worker.partitions == Settings().partitions


# --- kafka ---------------------------------------------------------------------------------


def test_broker_url_is_the_internal_listener(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    assert env["KAFKA_PROCESS_ROLES"].replace(" ", "") in ("broker,controller", "controller,broker")
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = _listeners(env["KAFKA_LISTENERS"].replace("://:", "://0.0.0.0:"))
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    host, port = advertised[internal]
    assert host in {"kafka", kafka.get("hostname", "kafka")}  # the service's name on the compose network
    assert bound[internal][1] == port
    settings = Settings.from_env(_env(compose["services"]["worker"]))
    assert settings.bootstrap_servers == [f"{host}:{port}"]
    # The internal listener is for containers only: not published to the host.
    assert str(port) not in {published for _, published, _ in _ports(kafka)}


def test_external_listener_is_published_on_loopback(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = _listeners(env["KAFKA_LISTENERS"].replace("://:", "://0.0.0.0:"))
    external = {name: addr for name, addr in advertised.items() if name != env["KAFKA_INTER_BROKER_LISTENER_NAME"]}
    assert external, "a listener for clients on the host"
    published = {(published, target) for _, published, target in _ports(kafka)}
    for name, (host, port) in external.items():
        assert host in ("127.0.0.1", "localhost")
        # Clients on the host reconnect to the advertised port: it must be published as-is.
        assert (str(port), str(bound[name][1])) in published


def test_kafka_kraft_single_node(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    assert kafka["image"].startswith("apache/kafka:4.")
    node_id = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    voter_id, voter = voters[0].split("@", 1)
    assert voter_id == node_id
    bound = _listeners(env["KAFKA_LISTENERS"].replace("://:", "://0.0.0.0:"))
    assert int(voter.rsplit(":", 1)[1]) == bound[controller][1]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) <= set(protocols)
    for name, value in env.items():
        if name.endswith("REPLICATION_FACTOR") or name.endswith("MIN_ISR") or name == "KAFKA_MIN_INSYNC_REPLICAS":
            assert value == "1", name
    data_dir = env["KAFKA_LOG_DIRS"]
    assert any(str(v).endswith(":" + data_dir) for v in kafka.get("volumes", [])), "broker data in a named volume"


# --- redis ---------------------------------------------------------------------------------


def test_redis_url_points_at_the_redis_service(compose: dict[str, Any]) -> None:
    redis_service = compose["services"]["redis"]
    command = redis_service.get("command") or []
    command = command.split() if isinstance(command, str) else [str(c) for c in command]
    port = int(command[command.index("--port") + 1]) if "--port" in command else 6379
    url = urlsplit(Settings.from_env(_env(compose["services"]["worker"])).redis_url)
    assert url.scheme == "redis"
    assert url.hostname in {"redis", redis_service.get("hostname", "redis")}
    assert (url.port or 6379) == port
    assert url.password is None and url.username is None, "the password goes in STREAMREC_REDIS_PASSWORD"
    assert port in {int(target) for _, _, target in _ports(redis_service)}


def test_redis_requires_the_same_password(raw: dict[str, Any]) -> None:
    """redis-server's --requirepass and the workers' STREAMREC_REDIS_PASSWORD are one variable."""
    command = [str(c) for c in raw["services"]["redis"]["command"]]
    server_secret = command[command.index("--requirepass") + 1]
    client_secret = _env({"environment": raw["x-streamrec-env"]})["STREAMREC_REDIS_PASSWORD"]
    assert SECRET_REFERENCE.fullmatch(server_secret) and SECRET_REFERENCE.fullmatch(client_secret)
    assert PLACEHOLDER.fullmatch(server_secret)["name"] == PLACEHOLDER.fullmatch(client_secret)["name"]  # type: ignore[index]


# --- exposure, health, dependencies ---------------------------------------------------------


def test_published_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    ports = [(name, p) for name, s in compose["services"].items() for p in _ports(s)]
    assert {name for name, _ in ports} >= {"kafka", "redis"}
    for name, (host_ip, published, target) in ports:
        assert host_ip == "127.0.0.1", f"{name} publishes {published}:{target} on {host_ip or 'every address'}"
        assert published, f"{name}: a random host port is still bound to all addresses by default"


def test_worker_waits_for_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    assert worker["command"][0] == "worker"
    depends = worker["depends_on"]
    assert isinstance(depends, dict)
    for name in ("kafka", "redis"):
        assert depends[name]["condition"] == "service_healthy"
        test = services[name]["healthcheck"]["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
        assert not services[name]["healthcheck"].get("disable", False)
    assert " ".join(services["kafka"]["healthcheck"]["test"]).count("kafka-broker-api-versions") == 1
    assert "ping" in " ".join(services["redis"]["healthcheck"]["test"])
    for tool in ("producer", "metrics"):
        assert services[tool]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_worker_can_scale_and_restarts(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a fixed name prevents --scale worker=N"
    assert str(worker["restart"]).startswith("on-failure")
    assert "ports" not in worker, "scaled workers cannot share a published port"
    assert "--scale worker=" in COMPOSE_FILE.read_text(encoding="utf-8")
    # Each scaled worker needs its own id: the default <hostname>-<pid> (pid 1 in every container)
    # differs only through the container hostname, so neither may be fixed.
    assert "hostname" not in worker, "a fixed hostname gives every scaled worker the same id"
    assert "STREAMREC_WORKER_ID" not in _env(worker), "a fixed worker id would be shared by the scaled workers"
    replicas = (worker.get("deploy") or {}).get("replicas", 1)
    assert int(replicas) == 1, "the scale comes from --scale worker=N"


def test_worker_processes_per_container(compose: dict[str, Any], raw: dict[str, Any]) -> None:
    """WORKER_PROCESSES (default 1) becomes `streamrec worker --processes N`, stopped before compose kills it."""
    worker = compose["services"]["worker"]
    args = build_parser().parse_args(worker["command"])
    assert args.command == "worker" and args.processes == 1  # by default the worker runs in PID 1, as before
    assert "${WORKER_PROCESSES:-1}" in raw["services"]["worker"]["command"]
    scaled = _interpolate(raw, {**_sample_environ(COMPOSE_FILE.read_text(encoding="utf-8")), "WORKER_PROCESSES": "3"})
    assert build_parser().parse_args(scaled["services"]["worker"]["command"]).processes == 3
    grace = str(worker["stop_grace_period"])
    assert grace.endswith("s") and args.stop_timeout < float(grace[:-1])


def test_tools_are_opt_in_and_parse(compose: dict[str, Any]) -> None:
    """producer and metrics sit in the tools profile; every service command is a valid streamrec command."""
    services = compose["services"]
    assert services["producer"]["profiles"] == ["tools"] and services["metrics"]["profiles"] == ["tools"]
    assert "profiles" not in services["worker"]
    assert services["producer"]["command"] == ["produce", "--synthetic", "100000"]
    assert services["metrics"]["command"] == ["metrics"]
    for name, service in _streamrec_services(compose).items():
        assert service["image"] == services["worker"]["image"], name
        build_parser().parse_args(service["command"])


def test_no_secret_literals(raw: dict[str, Any]) -> None:
    """Secrets only as ${VAR} / ${VAR:?msg} references: no literal value, no literal default."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for k, v in node.items():
                if any(w in str(k).upper() for w in SECRET_WORDS):
                    yield f"{path}.{k}", "" if v is None else str(v)
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, str) and "=" in v and any(w in v.split("=", 1)[0].upper() for w in SECRET_WORDS):
                    yield f"{path}[{i}]", v.split("=", 1)[1]
                if isinstance(v, str) and v.lstrip("-").upper() in SECRET_WORDS and i + 1 < len(node):
                    yield f"{path}[{i + 1}]", str(node[i + 1])  # --requirepass VALUE
                yield from walk(v, f"{path}[{i}]")

    secrets = list(walk(raw, ""))
    assert any("REDIS_PASSWORD" in where for where, _ in secrets)
    for where, value in secrets:
        assert SECRET_REFERENCE.fullmatch(value.strip()), f"{where} = {value!r} is not a ${{VAR}} reference"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert SAMPLE_SECRET not in text
    assert not re.search(r"redis://[^@\s/]*:[^@\s/]*@", text), "no password inside a Redis URL"


def test_volumes_are_declared(raw: dict[str, Any]) -> None:
    declared = set(raw.get("volumes") or {})
    for name, service in raw["services"].items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"


# --- Dockerfile ----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    out = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    final = dict(_final_stage())
    entrypoint = json.loads(final["ENTRYPOINT"])  # exec form
    assert len(entrypoint) == 1 and entrypoint[0] in scripts
    assert scripts[entrypoint[0]] == "streams.tools.cli:main"
    cmd = json.loads(final["CMD"])
    assert cmd == ["worker"]
    build_parser().parse_args(cmd)


def test_dockerfile_base_user_and_dependencies() -> None:
    instructions = _instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for ins, a in instructions if ins == "ARG" and "=" in a}
    bases = []
    for ins, a in instructions:
        if ins == "FROM":
            image = a.split()[0]
            bases.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image))
    assert bases and all(b == "python:3.11-slim" for b in bases)
    users = [a for ins, a in _final_stage() if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    installs = " ".join(a for ins, a in instructions if ins == "RUN" and "pip install" in a)
    assert "pip install" in installs
    extras = re.findall(r"\[([^\]]*)\]", installs)
    assert extras == ["serve"], "core dependencies and the HTTP API only (the services run beside it)"
    assert "apt-get" not in " ".join(a for ins, a in instructions if ins == "RUN"), "wheels only: no build tools"


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", ".venv", ".env", ".streamrec-dev", ".pytest_cache", "**/__pycache__"):
        assert needed in patterns, needed
    assert ".ci" in patterns or ".ci/kafka/lib" in patterns
    copied = [a.split()[0] for ins, a in _instructions() if ins == "COPY" and not a.startswith("--from")]
    for source in copied:
        assert source.rstrip("/") not in patterns, f"{source} is copied but ignored"
