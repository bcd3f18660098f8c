"""Typed configuration: one TOML file plus ``DRIFTLOOP__SECTION__KEY`` environment overrides.

Every field is documented once, here. Loading never half-succeeds: any bad key or value raises
``ConfigError`` naming the key path and the offending value.

>>> cfg = load_config(None, environ={"DRIFTLOOP__CAPTURE__SAMPLE_RATE": "0.5"})
>>> cfg.capture.sample_rate
0.5
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "DRIFTLOOP__"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SidecarConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the OpenAI-compatible proxy listens on.")
    port: int = Field(8100, ge=0, le=65535, description="Port of the proxy (0 picks a free one).")
    upstream_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the vLLM OpenAI server being watched."
    )
    upstream_timeout_s: float = Field(
        600.0, gt=0, description="Total time allowed for one upstream request, streams included."
    )
    upstream_connect_timeout_s: float = Field(
        5.0, gt=0, description="Time allowed to open a connection to the upstream."
    )
    max_connections: int = Field(
        512, ge=1, description="Upper bound on pooled upstream connections."
    )

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class CaptureConfig(_Section):
    enabled: bool = Field(True, description="Capture sampled traffic into DuckDB at all.")
    db_path: Path = Field(
        Path("data/driftloop.duckdb"), description="The DuckDB file this process owns."
    )
    sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of requests captured for models not listed below."
    )
    sample_rates: dict[str, float] = Field(
        default_factory=dict,
        description="Per public model name capture share, overriding the default.",
    )
    queue_size: int = Field(
        10_000, ge=1, description="Captured requests held in memory before new ones are dropped."
    )
    batch_size: int = Field(512, ge=1, description="Rows per DuckDB append; a full batch flushes.")
    flush_interval_s: float = Field(
        1.0, gt=0, description="Longest time a captured row waits in memory before it is written."
    )
    max_body_bytes: int = Field(
        4_000_000, ge=1024, description="Larger request or response bodies are not captured."
    )
    redact_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions whose matches are replaced by [REDACTED] before storage.",
    )

    @field_validator("sample_rates")
    @classmethod
    def _rates_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for model, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {model!r} is {rate}, must be within [0, 1]")
        return value


class VLLMConfig(_Section):
    launch: bool = Field(
        True, description="Start vLLM as a child process; false connects to upstream_url instead."
    )
    model_dir: Path | None = Field(
        None, description="Model folder to serve; empty means the embedded SmolLM2 default."
    )
    served_model_name: str = Field("smollm2", description="Name vLLM serves the base model under.")
    port: int = Field(8000, ge=0, le=65535, description="Port of a launched vLLM.")
    max_model_len: int = Field(1024, ge=64, description="Context length of a launched vLLM.")
    max_loras: int = Field(4, ge=1, description="Adapters a launched vLLM keeps resident at once.")
    max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank a launched vLLM accepts.")
    kv_cache_gib: int = Field(1, ge=1, description="KV cache size of a launched CPU vLLM.")
    start_timeout_s: float = Field(300.0, gt=0, description="Time allowed for vLLM to get healthy.")


class DriftConfig(_Section):
    enabled: bool = Field(
        True, description="Embed captured traffic and evaluate drift on a schedule."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between drift evaluations.")
    embed_interval_s: float = Field(
        5.0, gt=0, description="Seconds between passes that embed newly captured traffic."
    )
    embed_batch: int = Field(512, ge=1, description="Exchanges embedded per pass at most.")
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx", description="Embedding runtime: torch, onnx or onnx-int8 (see README benchmarks)."
    )
    embedding_threads: int = Field(1, ge=1, description="Threads the embedding worker may use.")
    reference_size: int = Field(
        2000, ge=10, description="Exchanges in a reference window (from the reference start)."
    )
    window_size: int = Field(
        2000, ge=10, description="Latest exchanges in the current window (sliding)."
    )
    min_samples: int = Field(
        200, ge=10, description="Both windows need at least this many samples to trip."
    )
    alpha: float = Field(
        0.01, gt=0, lt=0.5, description="Significance level of the calibrated drift tests."
    )


class ApiConfig(_Section):
    host: str = Field("127.0.0.1", description="Address of the control API (keep it loopback).")
    port: int = Field(8101, ge=0, le=65535, description="Port of the control API.")
    token_env: str = Field(
        "DRIFTLOOP_API_TOKEN", description="Environment variable holding the bearer token."
    )


class Config(_Section):
    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)  # type: ignore[arg-type]
    capture: CaptureConfig = Field(default_factory=CaptureConfig)  # type: ignore[arg-type]
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)  # type: ignore[arg-type]
    drift: DriftConfig = Field(default_factory=DriftConfig)  # type: ignore[arg-type]
    api: ApiConfig = Field(default_factory=ApiConfig)  # type: ignore[arg-type]
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Public model name -> served model name; the proxy rewrites `model` with it.",
    )
    cache_dir: Path = Field(
        Path(".cache"), description="Where converted models and other rebuildable files live."
    )


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or defaults), apply environment overrides, and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    _apply_env_overrides(raw, os.environ if environ is None else environ)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, path)) from None


def _apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``DRIFTLOOP__CAPTURE__SAMPLE_RATE=0.1`` sets ``capture.sample_rate``; values parse as JSON."""
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(keys[:-1])} is not a section")
            node = child
        try:
            node[keys[-1]] = json.loads(text)
        except json.JSONDecodeError:
            node[keys[-1]] = text  # a bare string such as a URL or a path


def _describe(exc: ValidationError, raw: Mapping[str, Any], path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
            continue
        value = _lookup(raw, error["loc"])
        lines.append(f"  {key} = {value!r}: {error['msg']}")
    return "\n".join(lines)


def _lookup(raw: Mapping[str, Any], loc: tuple[int | str, ...]) -> Any:
    node: Any = raw
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return "<missing>"
    return node


def documented_keys() -> dict[str, str]:
    """Every config key with its one-line description, for docs and the docs test."""
    keys: dict[str, str] = {}
    for field_name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            for sub_name, sub in annotation.model_fields.items():
                keys[f"{field_name}.{sub_name}"] = sub.description or ""
        else:
            keys[field_name] = field.description or ""
    return keys
