"""deploy/monitoring (Prometheus, Grafana provisioning, the streamrec dashboard) and the compose
``monitoring`` profile agree with each other and with the code; no Docker needed.

The dashboard's PromQL is parsed for metric names, and every one must be a metric the worker's or
the server's registry exposes (tests/integration/test_prometheus.py checks the same against the
running processes' endpoints).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.settings import Settings
from streams.state.store import MemoryStateStore
from streams.tools.http_metrics import HttpMetrics
from streams.worker.prometheus import worker_registry
from streams.worker.service import RecommenderService
from tests.unit.test_compose import COMPOSE_FILE, _env, _interpolate, _sample_environ

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "streamrec.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards" / "streamrec.yml"

# PromQL keywords that look like metric names; functions and aggregations are told by the "(" after them.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (``_bucket``, ``_sum``, ``_count`` stripped).

    >>> sorted(metric_names('histogram_quantile(0.99, sum by (le, route) (rate(x_seconds_bucket{a="b"}[5m])))'))
    ['x_seconds']
    >>> sorted(metric_names("sum by (k) (a * on (instance) group_left b) / scalar(sum(c_total))"))
    ['a', 'b', 'c_total']
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        if word.lower() in _PROMQL_WORDS or expr[match.end():].lstrip().startswith("("):
            continue
        for suffix in _SERIES_SUFFIXES:
            if word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        names.add(word)
    return names


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def dashboard_metric_names() -> dict[str, set[str]]:
    """Panel title -> the metric names its queries read."""
    return {p["title"]: set().union(*(metric_names(t["expr"]) for t in p["targets"]))
            for p in panels(dashboard()) if p.get("type") != "row"}


def exposed_names(families: Iterable[Any]) -> set[str]:
    """Names a query may use for these metric families (counters also with ``_total``)."""
    names = set()
    for family in families:
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def registries() -> list[CollectorRegistry]:
    async def nowhere(records: Any) -> None:
        pass

    service = RecommenderService(Settings(worker_id="w1"), MemoryStateStore(), None, nowhere, nowhere)  # type: ignore[arg-type]
    return [worker_registry(service), HttpMetrics().registry]


# --- the dashboard ---------------------------------------------------------------------------------


def test_every_dashboard_query_reads_metrics_the_worker_or_the_server_exposes():
    exposed = set().union(*(exposed_names(r.collect()) for r in registries()))
    used = dashboard_metric_names()
    assert all(used.values()), f"panels without a metric: {[t for t, n in used.items() if not n]}"
    unknown = {title: sorted(names - exposed) for title, names in used.items() if names - exposed}
    assert not unknown, f"queries name metrics nobody exposes: {unknown}"


def test_the_dashboard_shows_what_the_issue_lists():
    used = set().union(*dashboard_metric_names().values())
    assert {"streamrec_events_processed_total", "streamrec_dead_letters_total", "streamrec_consumer_lag",
            "streamrec_freshness_seconds", "streamrec_batch_seconds", "streamrec_redis_errors_total",
            "streamrec_model_users", "streamrec_model_items", "streamrec_model_factor_bytes",
            "streamrec_online_hit_ratio", "streamrec_http_requests_total",
            "streamrec_http_request_duration_seconds"} <= used
    exprs = [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]
    for quantile in ("0.5", "0.99"):
        assert any(f"histogram_quantile({quantile}" in e and "streamrec_freshness_seconds_bucket" in e for e in exprs)
    assert any("by (reason)" in e and "streamrec_dead_letters_total" in e for e in exprs)
    assert any("by (partition)" in e and "streamrec_consumer_lag" in e for e in exprs)
    assert any("route" in e and "streamrec_http_request_duration_seconds_bucket" in e for e in exprs)


def test_dashboard_panels_use_the_provisioned_data_source_and_unique_ids():
    doc = dashboard()
    uid = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"][0]["uid"]
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    assert doc["uid"] == "streamrec" and doc["title"] == "streamrec"
    for panel in panels(doc):
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid and t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]


# --- provisioning and compose --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return _interpolate(raw, _sample_environ(COMPOSE_FILE.read_text(encoding="utf-8")))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of the service's bind mounts."""
    out = {}
    for volume in service.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


def test_monitoring_services_are_opt_in_and_mount_files_that_exist(compose):
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        for target, source in _mounts(services[name]).items():
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
    assert _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == \
        "./" + str(PROMETHEUS_CONFIG.relative_to(ROOT))
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_prometheus_scrapes_the_workers_where_they_listen(compose):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["streamrec-worker"]["dns_sd_configs"][0]
    worker = compose["services"]["worker"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"  # every container of `--scale worker=N`
    settings = Settings.from_env(_env(worker))
    assert sd["port"] == settings.metrics_port == Settings().metrics_port
    # inside the compose network only: the workers listen on the container's addresses, publish nothing
    assert settings.metrics_host == "0.0.0.0"  # noqa: S104
    assert "ports" not in worker


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    source = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090" in str(compose["services"]["prometheus"]["ports"][0]).split(":")[-1]
    assert mounts["/etc/grafana/provisioning"] == "./" + str((MONITORING / "grafana" / "provisioning").relative_to(ROOT))
    provider = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"][0]
    dashboards_dir = provider["options"]["path"]
    assert (ROOT / mounts[dashboards_dir] / DASHBOARD.name).is_file()
    home = _env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"


def test_grafana_admin_password_comes_from_the_environment_and_is_required(compose, tmp_path):
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert raw["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    # The entrypoint refuses an empty password (Grafana would fall back to admin/admin): run it with sh,
    # standing in a script for the image's /run.sh.
    entrypoint = compose["services"]["grafana"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2].replace("$$", "$").replace("/run.sh", str(tmp_path / "run.sh"))
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho started \"$@\"\n")
    (tmp_path / "run.sh").chmod(0o755)
    for password, code, says in (("", 1, "set GRAFANA_ADMIN_PASSWORD"), ("s3cret", 0, "started")):
        done = subprocess.run(["/bin/sh", "-c", script, *entrypoint[3:]], env={"GF_SECURITY_ADMIN_PASSWORD": password},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == code and says in done.stdout + done.stderr

