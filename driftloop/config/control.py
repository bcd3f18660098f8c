"""The people-facing sections: the control API and Grafana."""

from __future__ import annotations

import re

from pydantic import (
    Field,
    field_validator,
)

from driftloop.config.loading import (
    listen_host,
)
from driftloop.config.section import Section


class ApiConfig(Section):
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


class GrafanaConfig(Section):
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
