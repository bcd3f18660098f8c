"""Typed configuration: one TOML file plus ``DRIFTLOOP__SECTION__KEY`` environment overrides.

Every field is documented once, here. Loading never half-succeeds: any bad key or value raises
``ConfigError`` naming the key path and the offending value.

>>> cfg = load_config(None, environ={"DRIFTLOOP__CAPTURE__SAMPLE_RATE": "0.5"})
>>> cfg.capture.sample_rate
0.5
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from driftloop.config_loading import (
    ENV_PREFIX,
    ConfigError,
    apply_env_overrides,
    check_api_token,
    describe,
    hosts_overlap,
    listen_host,
    read_toml,
)
from monitor.paths import DEFAULT_FORWARD_PATHS
from monitor.redaction import compile_pattern
from monitor.sampling import LOOPBACK_NETWORKS

__all__ = ["ENV_PREFIX", "Config", "ConfigError", "check_api_token", "load_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SidecarConfig(_Section):
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
    api_key_env: str = Field(
        "DRIFTLOOP_VLLM_API_KEY",
        description="Env var with vLLM's API key: a launched vLLM uses it (else a fresh random"
        " key per start); an external upstream gets it in place of the client's Authorization"
        " header (unset: that header passes through).",
    )


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
        0.01,
        gt=0,
        lt=0.5,
        description="Family-wise false-alarm rate of each alias's combined drift decision.",
    )
    sessions: bool = Field(
        True,
        description="Permute whole sessions (requests.session_key) in every drift null; off: rows are independent.",
    )


def _default_rules() -> dict[str, dict[str, Any]]:
    return {"refusal": {}, "empty": {}}


class JudgesConfig(_Section):
    enabled: bool = Field(
        True, description="Judge a sample of captured traffic on a schedule (LLM and rule judges)."
    )
    base_url: str = Field(
        "",
        description="OpenAI-compatible base URL of the judge model (ending in /v1); empty means the sidecar's upstream vLLM.",
    )
    model: str = Field(
        "", description="Judge model name at that endpoint; empty means vllm.served_model_name."
    )
    api_key_env: str = Field(
        "DRIFTLOOP_JUDGE_API_KEY",
        description="Environment variable holding the judge endpoint's API key (unset: none sent).",
    )
    rubric: str = Field(
        "helpfulness",
        description="Rubric of the LLM judge: a name in judges/rubrics/ or a path to a .toml file.",
    )
    structured_output: bool = Field(
        False,
        description="Ask the endpoint to enforce the verdict's JSON schema (response_format json_schema).",
    )
    max_tokens: int = Field(128, ge=8, description="Longest verdict the judge model may write.")
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=_default_rules,
        description="Rule judges to run on the same sample: kind -> parameters (refusal, empty, json_valid, regex, length).",
    )
    sample_rate: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of captured exchanges judged, per model alias."
    )
    sample_rates: dict[str, float] = Field(
        default_factory=dict, description="Per model alias judging share, overriding sample_rate."
    )
    per_alias: int = Field(
        50, ge=1, description="Exchanges judged per model alias and pass, at most (newest first)."
    )
    concurrency: int = Field(4, ge=1, description="Judge calls in flight at once.")
    timeout_s: float = Field(30.0, gt=0, description="Time allowed for one judge call attempt.")
    max_retries: int = Field(
        3,
        ge=0,
        description="Retries of a judge call after a 429, 5xx, timeout or refused connection.",
    )
    backoff_s: float = Field(
        1.0, ge=0, description="Delay before the first retry; doubles per retry (with jitter)."
    )
    daily_token_budget: int = Field(
        200_000,
        ge=0,
        description="Judge tokens (prompt + completion) per UTC day; then judging stops.",
    )
    daily_request_budget: int = Field(
        2_000, ge=0, description="Judge HTTP requests per UTC day; then judging stops."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between judging passes.")
    window_size: int = Field(
        200, ge=1, description="Latest scored judgments per alias behind the score-mean gauge."
    )
    calibration_set: Path | None = Field(
        None,
        description="Labelled JSONL set for `driftloop judges calibrate`; empty means the shipped trivia set.",
    )
    calibration_min_kappa: float = Field(
        0.4, ge=-1, le=1, description="A judge whose weighted kappa is below this is flagged."
    )
    calibration_min_parsed: float = Field(
        0.9, ge=0, le=1, description="A judge that scores fewer items than this share is flagged."
    )
    anchor_set: Path | None = Field(
        None, description="Anchor JSONL set re-judged for judge drift; empty means the shipped one."
    )
    anchor_interval_s: float = Field(
        3600.0, gt=0, description="Seconds between re-judging the anchor set."
    )
    anchor_max_shift: float = Field(
        0.5,
        gt=0,
        description="A shift of the anchor mean score this large is reported as judge drift.",
    )

    @field_validator("base_url")
    @classmethod
    def _judge_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or start with http:// or https://")
        return value.rstrip("/")

    @field_validator("sample_rates")
    @classmethod
    def _judge_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for model, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {model!r} is {rate}, must be within [0, 1]")
        return value

    @field_validator("rubric")
    @classmethod
    def _rubric_loads(cls, value: str) -> str:
        from judges.rubric import load_rubric

        load_rubric(value)  # raises RubricError (a ValueError) naming the file and the field
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from judges.plugins import build_rule_judge

        for kind, params in value.items():
            build_rule_judge(kind, params)  # raises ValueError naming the kind and parameter
        return value


class RetrainConfig(_Section):
    enabled: bool = Field(
        True, description="Evaluate retrain triggers on a schedule and run the loop when they trip."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between trigger evaluations.")
    drift_signals: list[str] = Field(
        default_factory=lambda: ["combined"],
        description="Drift signals whose tripping counts toward the drift trigger (combined: the alias's decision).",
    )
    drift_consecutive: int = Field(
        3, ge=1, description="A drift signal must trip in this many consecutive evaluations."
    )
    quality_bar: float | None = Field(
        3.0, description="Retrain when the judges' mean score (1-5) falls below this; null: off."
    )
    quality_min_samples: int = Field(
        20, ge=1, description="Judgments needed in the window before the quality trigger may trip."
    )
    volume_examples: int | None = Field(
        200, ge=1, description="Retrain after this many new feedback examples; null: off."
    )
    schedule_s: float | None = Field(
        None, gt=0, description="Retrain at least this often (seconds); null: no schedule."
    )
    cooldown_s: float = Field(
        3600.0, ge=0, description="Seconds after a run starts before another may be triggered."
    )
    min_examples: int = Field(
        20, ge=1, description="Training examples needed before a run may start."
    )
    judged_min_score: float = Field(
        4.0, ge=1, le=5, description="Captured answers judged at least this good become examples."
    )
    replay_share: float = Field(
        0.2, ge=0, lt=1, description="Least share of replayed earlier data in a training split."
    )
    seed_dataset: Path | None = Field(
        None,
        description="JSONL of chat examples the production model was tuned on: the first replay pool.",
    )
    base_model_dir: Path | None = Field(
        None, description="Base model the adapters train on; empty means the served model's folder."
    )
    lora_rank: int = Field(8, ge=1, description="LoRA rank of new adapters.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha of new adapters.")
    learning_rate: float = Field(2e-4, gt=0, description="Learning rate of a training run.")
    max_learning_rate: float = Field(
        1e-3, gt=0, description="Cap on learning_rate (a higher value is refused)."
    )
    max_steps: int = Field(60, ge=1, description="Optimizer steps of a training run.")
    max_steps_cap: int = Field(2000, ge=1, description="Cap on max_steps.")
    batch_size: int = Field(4, ge=1, description="Examples per optimizer step.")
    train_time_limit_s: float = Field(
        1800.0, gt=0, description="A training subprocess running longer is killed."
    )
    train_threads: int = Field(1, ge=1, description="CPU threads the trainer may use.")
    golden_sets: dict[str, str] = Field(
        default_factory=lambda: {"*": "helpdesk"},
        description="Model alias (or *) -> golden set name[@version] the gate runs.",
    )
    gate_margin: float = Field(
        0.05, ge=0, lt=1, description="How far below production a candidate may score and pass."
    )
    gate_min_improvement: float = Field(
        0.10, ge=0, le=1, description="How much better the candidate must be on drifted categories."
    )
    drifted_categories: list[str] = Field(
        default_factory=list,
        description="Golden-set categories that must improve; empty: the overall score must.",
    )
    gate_max_tokens: int = Field(64, ge=1, description="Tokens per golden-set answer.")
    auto_deploy: bool = Field(
        True, description="Ship adapters that pass the gate; false leaves them in staging."
    )
    keep_versions: int = Field(
        3, ge=1, description="Earlier production versions kept loaded in vLLM for rollback."
    )
    rollback_watch_s: float = Field(
        3600.0, ge=0, description="After a deploy, watch the new version's traffic this long."
    )
    rollback_min_samples: int = Field(
        20, ge=1, description="Requests (or judgments) needed before the guard may roll back."
    )
    rollback_max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Roll back when a larger share of its requests fail."
    )
    rollback_min_judge_score: float | None = Field(
        2.5, description="Roll back when the judges' mean on its answers is below this; null: off."
    )


class ApiConfig(_Section):
    host: str = Field("127.0.0.1", description="Address of the control API (keep it loopback).")
    port: int = Field(8101, ge=0, le=65535, description="Port of the control API.")
    token_env: str = Field(
        "DRIFTLOOP_API_TOKEN", description="Environment variable holding the bearer token."
    )

    _host = field_validator("host")(listen_host)
    unauthenticated_rate_per_s: float = Field(
        5.0,
        gt=0,
        description="Calls per second one client may make without a valid token (401s);"
        " beyond it they get 429 and are audited as one row with a count.",
    )
    unauthenticated_burst: int = Field(
        20, ge=1, description="Calls without a valid token one client may make in a burst."
    )


class GrafanaConfig(_Section):
    url: str = Field(
        "", description="Grafana base URL `driftloop dashboards push` uploads to; empty: no push."
    )
    token_env: str = Field(
        "DRIFTLOOP_GRAFANA_TOKEN",
        description="Environment variable holding a Grafana service account token (Editor).",
    )
    folder: str = Field(
        "driftloop", description="Folder uid (and title) the dashboards are pushed into."
    )
    datasource_uid: str = Field(
        "driftloop-prometheus",
        description="UID of the Prometheus data source in that Grafana the dashboards query.",
    )
    timeout_s: float = Field(10.0, gt=0, description="Time allowed for each Grafana API call.")

    @field_validator("url")
    @classmethod
    def _empty_or_http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or start with http:// or https://")
        return value.rstrip("/")

    @field_validator("folder", "datasource_uid")
    @classmethod
    def _grafana_uid(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", value):
            raise ValueError("must be 1-40 letters, digits, '-' or '_' (a Grafana uid)")
        return value


class Config(_Section):
    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    grafana: GrafanaConfig = Field(default_factory=GrafanaConfig)
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
