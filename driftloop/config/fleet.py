"""The fleet section: object storage, the sidecar's identity and spool, and the controller's URL.

`driftloop serve` (one box) ignores it. `driftloop sidecar` needs ``sidecar_id``,
``object_store_url`` and ``controller_url``; `driftloop controller` needs ``object_store_url``
(``driftloop.config.roles`` checks, naming the missing keys).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from driftloop.config.section import Section


class FleetConfig(Section):
    sidecar_id: str = Field(
        "", description="This sidecar's name in shard keys and metrics (unique in the fleet)."
    )
    object_store_url: str = Field(
        "", description="Where shards go: s3://bucket/prefix, or a local folder path."
    )
    s3_endpoint: str = Field(
        "", description="S3 API endpoint URL (SeaweedFS, MinIO); empty for AWS."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    access_key_env: str = Field(
        "AWS_ACCESS_KEY_ID", description="Environment variable holding the S3 access key."
    )
    secret_key_env: str = Field(
        "AWS_SECRET_ACCESS_KEY", description="Environment variable holding the S3 secret key."
    )
    spool_dir: Path = Field(
        Path("data/spool"), description="Local folder for shards waiting for object storage."
    )
    spool_max_bytes: int = Field(
        2**30, ge=2**20, description="Most bytes the spool holds before capture backs up."
    )
    shard_max_bytes: int = Field(
        8 * 2**20, ge=4096, description="A shard is sealed at this many bytes of Arrow rows..."
    )
    shard_max_age_s: float = Field(
        5.0, gt=0, le=300, description="...or when its first row is this old (bounds kill -9 loss)."
    )
    controller_url: str = Field(
        "", description="The controller's control API, where sidecars fetch the routing table."
    )
    token_env: str = Field(
        "DRIFTLOOP_FLEET_TOKEN",
        description="Environment variable with the fleet token (routing table reads only).",
    )
    routing_poll_s: float = Field(
        2.0, gt=0, le=300, description="How often a sidecar polls the routing table."
    )
    ingest_interval_s: float = Field(
        2.0, gt=0, le=300, description="How often the controller lists new shards."
    )
    adapter_agent: bool = Field(
        True,
        description="Run the adapter agent: make this sidecar's vLLM hold the wanted versions"
        " (off for an upstream that is not a vLLM with runtime LoRA).",
    )
    adapter_cache_dir: Path = Field(
        Path("data/adapters"),
        description="Where the agent keeps verified adapter bundles (the vLLM beside it reads"
        " them from here).",
    )
    agent_interval_s: float = Field(
        5.0, gt=0, le=300, description="How often the agent checks its vLLM and reports."
    )
    live_after_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="A replica counts for a rollout while its agent reported this recently.",
    )
    rollout_timeout_s: float = Field(
        300.0, gt=0, le=7200, description="How long a rollout waits for every replica."
    )
    eval_sidecar: str = Field(
        "",
        description="The sidecar whose vLLM (the controller's sidecar.upstream_url) serves the"
        " gate's candidates: an evaluation replica, or one taken out of rotation.",
    )

    @field_validator("sidecar_id", "eval_sidecar")
    @classmethod
    def _sidecar_id(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("object_store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value.startswith("s3://") and len(value) <= len("s3://"):
            raise ValueError("s3:// needs a bucket: s3://bucket/prefix")
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError("must be s3://bucket/prefix, file:///path or a path")
        return value
