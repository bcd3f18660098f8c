"""The request path's sections: the proxy (sidecar), what it captures, and the vLLM it may launch."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from driftloop.config.loading import (
    listen_host,
)
from driftloop.config.section import Section
from monitor.paths import DEFAULT_FORWARD_PATHS
from monitor.redaction import compile_pattern
from monitor.sampling import LOOPBACK_NETWORKS


class SidecarConfig(Section):
    host: str = Field("127.0.0.1", description="Address the OpenAI-compatible proxy listens on.")
    port: int = Field(8100, ge=0, le=65535, description="Port of the proxy (0 picks a free one).")
    upstream_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the vLLM OpenAI server being watched."
    )
    first_byte_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Time allowed for the upstream's response headers (a whole answer's generation).",
    )
    idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest silence between two chunks of an upstream body; a stream may run longer.",
    )
    upstream_connect_timeout_s: float = Field(
        5.0, gt=0, description="Time allowed to open a connection to the upstream."
    )
    max_connections: int = Field(
        512, ge=1, description="Upper bound on pooled upstream connections."
    )
    forward_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORWARD_PATHS),
        description="Paths the proxy forwards (`prefix/*` allows below prefix); others get a 404.",
    )
    max_request_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger request bodies are refused with a 413."
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Larger request lines plus headers are refused with a 431."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a client has to send its request headers (408, or an idle close).",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Time a client has to send its whole request body (408)."
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="An idle kept-alive client connection is closed after this long."
    )
    max_client_connections: int = Field(
        1024, ge=1, description="Open client connections at most; more are refused with a 503."
    )

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("forward_paths")
    @classmethod
    def _absolute_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"path {path!r} must start with '/'")
        return value

    _host = field_validator("host")(listen_host)


Detector = Literal["secrets", "cards", "emails"]  # monitor.redaction.DETECTORS (a test checks)


def _all_detectors() -> list[Detector]:
    return ["secrets", "cards", "emails"]


class CaptureConfig(Section):
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
    trusted_networks: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_NETWORKS),
        description="CIDRs whose `x-driftloop-capture: force|skip` header is honoured (others: ignored).",
    )
    queue_size: int = Field(
        10_000, ge=1, description="Captured requests held in memory before new ones are dropped."
    )
    batch_size: int = Field(512, ge=1, description="Rows per DuckDB append; a full batch flushes.")
    flush_interval_s: float = Field(
        1.0, gt=0, description="Longest time a captured row waits in memory before it is written."
    )
    session_header: str = Field(
        "",
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$",
        description="Request header naming the conversation (e.g. x-session-id); when a client"
        " sends it, it decides the row's session key. Empty: the OpenAI `user` field, then the"
        " first user turn.",
    )
    rows_in_child: bool = Field(
        True,
        description="Parse, redact and build rows in a child process (niced), off the proxy's"
        " interpreter; false: in the writer thread.",
    )
    max_body_bytes: int = Field(
        4_000_000, ge=1024, description="Larger request or response bodies are not captured."
    )
    max_buffer_bytes: int = Field(
        256 * 2**20,
        ge=2**20,
        description="Bytes of captured bodies held in memory (waiting, or retried while the store"
        " fails) before new captures are dropped.",
    )
    max_batch_bytes: int = Field(
        16 * 2**20,
        ge=2**16,
        description="Bytes of bodies per DuckDB append; bounds the copies one flush makes.",
    )
    duckdb_memory_limit_bytes: int = Field(
        256 * 2**20, ge=64 * 2**20, description="DuckDB's buffer pool limit (its memory_limit)."
    )
    duckdb_threads: int = Field(2, ge=1, description="Threads DuckDB may use for its queries.")
    redact_patterns: list[str] = Field(
        default_factory=list,
        description="Extra regular expressions whose matches are replaced by [REDACTED] before storage.",
    )
    redact_detectors: list[Detector] = Field(
        default_factory=_all_detectors,
        description="Built-in detectors redacted before storage: secrets (API keys, tokens, passwords), cards (Luhn-checked), emails.",
    )

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            compile_pattern(pattern)  # raises ValueError naming the pattern and the regex error
        return value

    @field_validator("sample_rates")
    @classmethod
    def _rates_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for model, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {model!r} is {rate}, must be within [0, 1]")
        return value

    @field_validator("trusted_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"{network!r} is not a network (CIDR such as 10.0.0.0/8)"
                ) from None
        return value


class VLLMConfig(Section):
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
    api_key_env: str = Field(
        "DRIFTLOOP_VLLM_API_KEY",
        description="Env var with vLLM's API key: a launched vLLM uses it (else a fresh random"
        " key per start); an external upstream gets it in place of the client's Authorization"
        " header (unset: that header passes through).",
    )
