"""docker-compose.yml checked statically (Docker does not run here): structure, mounted host paths,
and the ports and service names Prometheus scrapes and Grafana queries."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from driftloop.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
SERVICES = COMPOSE["services"]


def _container_ports(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        assert host and container.isdigit(), f"port {spec!r}: use HOST:CONTAINER"
        ports.add(int(container))
    return ports


def _aliases(name: str) -> set[str]:
    names = {name}
    for network in (SERVICES[name].get("networks") or {}).values():
        names |= set((network or {}).get("aliases", []))
    return names


def test_the_stack_has_every_service_with_an_image_or_a_build():
    assert {"vllm", "vllm-cpu", "driftloop", "prometheus", "alertmanager", "grafana"} <= set(
        SERVICES
    )
    for name, service in SERVICES.items():
        assert ("image" in service) != ("build" in service), f"{name}: image xor build"
        assert set(service) <= {
            *("image", "build", "command", "environment", "volumes", "ports", "profiles"),
            *("deploy", "healthcheck", "networks", "ipc", "depends_on", "entrypoint"),
        }, name
    assert SERVICES["vllm"]["profiles"] == ["gpu"]
    assert (
        SERVICES["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    )
    assert SERVICES["vllm-cpu"]["profiles"] == ["cpu"]
    assert "vllm" in _aliases("vllm-cpu")  # either profile's vLLM answers as "vllm"
    images = [s["image"] for s in SERVICES.values() if "image" in s]
    assert all(re.search(r":v?\d+\.\d+\.\d+$", image) for image in images), images


def test_every_mounted_host_path_exists_and_named_volumes_are_declared():
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source, target, *_ = mount.split(":")
            assert target.startswith("/"), f"{name}: {mount}"
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_prometheus_scrapes_services_on_ports_they_listen_on():
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert {"driftloop", "vllm"} <= set(jobs)
    for job in ("driftloop", "vllm"):
        for target in jobs[job]["static_configs"][0]["targets"]:
            host, port = target.split(":")
            owners = [n for n in SERVICES if host in _aliases(n)]
            assert owners, f"scrape target {target}: no service named {host}"
            for owner in owners:
                assert int(port) in _container_ports(SERVICES[owner]), f"{owner} has no {port}"
    [am] = PROMETHEUS["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = am.split(":")
    assert int(port) in _container_ports(SERVICES[host])


def test_prometheus_config_is_valid_and_loads_the_repo_rules(tmp_path):
    """promtool checks the config with the rule file path the compose mount provides."""
    mounts = dict(m.split(":")[1::-1] for m in SERVICES["prometheus"]["volumes"] if m[0] == ".")
    config = dict(PROMETHEUS)
    config["rule_files"] = [
        str(REPO / mounts[path].removeprefix("./")) for path in PROMETHEUS["rule_files"]
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    groups = yaml.safe_load((REPO / "alerts" / "driftloop.rules.yml").read_text())["groups"]
    n_rules = sum(len(group["rules"]) for group in groups)
    assert f"{n_rules} rules found" in result.stdout + result.stderr


def test_grafana_datasource_and_driftloop_config_match_the_stack():
    datasources = yaml.safe_load(
        (REPO / "dashboards/provisioning/datasources/prometheus.yml").read_text()
    )
    url = datasources["datasources"][0]["url"]
    host, port = url.removeprefix("http://").split(":")
    assert int(port) in _container_ports(SERVICES[host])
    cfg = load_config(REPO / "deploy" / "driftloop.toml", environ={})
    assert not cfg.vllm.launch
    assert cfg.sidecar.upstream_url == "http://vllm:8000"
    assert cfg.sidecar.port in _container_ports(SERVICES["driftloop"])
    assert cfg.grafana.url == "http://grafana:3000"
    mounted = [m.split(":")[1] for m in SERVICES["driftloop"]["volumes"]]
    assert "/etc/driftloop/driftloop.toml" in mounted
    assert str(cfg.capture.db_path).startswith("/data/") and "driftloop-data:/data" in [
        m for m in SERVICES["driftloop"]["volumes"]
    ]
