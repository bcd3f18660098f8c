"""Typed configuration: one TOML file plus ``DRIFTLOOP__SECTION__KEY`` environment overrides.

Every field is documented once, in its section's module (``traffic``, ``loop``, ``control``). Loading never half-succeeds: any bad key or value raises
``ConfigError`` naming the key path and the offending value.

>>> cfg = load_config(None, environ={"DRIFTLOOP__CAPTURE__SAMPLE_RATE": "0.5"})
>>> cfg.capture.sample_rate
0.5
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator

from driftloop.config.control import ApiConfig, GrafanaConfig
from driftloop.config.fleet import FleetConfig
from driftloop.config.loading import (
    ENV_PREFIX,
    ConfigError,
    apply_env_overrides,
    check_api_token,
    describe,
    hosts_overlap,
    read_toml,
)
from driftloop.config.loop import DriftConfig, JudgesConfig, RetrainConfig, TeacherConfig
from driftloop.config.section import Section
from driftloop.config.traffic import CaptureConfig, SidecarConfig, VLLMConfig

__all__ = [
    "ENV_PREFIX",
    "ApiConfig",
    "CaptureConfig",
    "Config",
    "ConfigError",
    "DriftConfig",
    "FleetConfig",
    "GrafanaConfig",
    "JudgesConfig",
    "RetrainConfig",
    "SidecarConfig",
    "TeacherConfig",
    "VLLMConfig",
    "check_api_token",
    "check_role",
    "load_config",
]


class Config(Section):
    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    grafana: GrafanaConfig = Field(default_factory=GrafanaConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Public model name -> served model name; the proxy rewrites `model` with it.",
    )
    cache_dir: Path = Field(
        Path(".cache"), description="Where converted models and other rebuildable files live."
    )

    @model_validator(mode="after")
    def _ports_differ(self) -> Config:
        """Two servers on one port fail only at serve; say which keys clash before that."""
        listeners = [("sidecar.port", self.sidecar.host, self.sidecar.port)]
        listeners.append(("api.port", self.api.host, self.api.port))
        if self.vllm.launch:
            listeners.append(("vllm.port", "127.0.0.1", self.vllm.port))
        for i, (key, host, port) in enumerate(listeners):
            for other, other_host, other_port in listeners[:i]:
                if port and port == other_port and hosts_overlap(host, other_host):
                    raise ValueError(f"{key} = {port} is also {other}; each server needs its own")
        upstream = urlsplit(self.sidecar.upstream_url)
        upstream_port = upstream.port or (443 if upstream.scheme == "https" else 80)
        upstream_host = upstream.hostname or ""
        local = upstream_host in {"localhost", "::1"} or upstream_host.startswith("127.")
        if (
            not self.vllm.launch
            and upstream_port == self.sidecar.port
            and (
                upstream_host == self.sidecar.host
                or (local and hosts_overlap(upstream_host, self.sidecar.host))
            )
        ):
            raise ValueError(
                f"sidecar.upstream_url = {self.sidecar.upstream_url!r} is the sidecar itself"
                f" (sidecar.port = {self.sidecar.port}); point it at vLLM"
            )
        return self


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or defaults), apply environment overrides, and validate."""
    raw = read_toml(path) if path is not None else {}
    origins = apply_env_overrides(raw, os.environ if environ is None else environ, Config)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, raw, path, origins)) from None


ROLE_KEYS = {
    "sidecar": ("sidecar_id", "object_store_url", "controller_url"),
    "controller": ("object_store_url",),
}


def check_role(cfg: Config, role: str) -> None:
    """Raise ``ConfigError`` naming every ``fleet.*`` key ``role`` needs and the file lacks."""
    missing = [f"fleet.{key}" for key in ROLE_KEYS.get(role, ()) if not getattr(cfg.fleet, key)]
    if missing:
        raise ConfigError(f"`driftloop {role}` needs {', '.join(missing)} (see README, Fleet)")


def documented_keys() -> dict[str, str]:
    """Every config key with its one-line description, for docs and the docs test."""
    keys: dict[str, str] = {}
    for field_name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            for sub_name, sub in annotation.model_fields.items():
                keys[f"{field_name}.{sub_name}"] = sub.description or ""
        else:
            keys[field_name] = field.description or ""
    return keys
