"""A client of the control API: base URL and token in, JSON out, errors that name the URL.

The CLI and the demo talk to a running service through it. It does not read the environment
(``trust_env=False``): an ``http_proxy`` setting must not route a call to 127.0.0.1 elsewhere.

>>> ControlClient("http://127.0.0.1:8081/", "t" * 32).url("/retrain/runs")
'http://127.0.0.1:8081/api/v1/retrain/runs'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from driftloop.config import Config

API_PREFIX = "/api/v1"


class ControlApiError(RuntimeError):
    """The control API answered an error status; the message names the method, URL and status."""

    def __init__(self, message: str, url: str, status: int | None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class ServiceUnreachableError(ControlApiError):
    """Nothing answered at the control API's address (no service runs there)."""


class ControlClient:
    """Authenticated JSON calls to ``<base_url>/api/v1``; use as a context manager or ``close()``."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            timeout=timeout_s, trust_env=False, headers={"Authorization": f"Bearer {token}"}
        )

    @classmethod
    def for_config(cls, cfg: Config, *, timeout_s: float = 30.0) -> ControlClient:
        """The client of the service that ``cfg`` describes (its api.host, api.port and token)."""
        from driftloop.service import api_token  # the service module is heavy; only when used

        return cls(f"http://{cfg.api.host}:{cfg.api.port}", api_token(cfg), timeout_s=timeout_s)

    def url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One call; returns the decoded JSON body (None when empty), raises ControlApiError."""
        url = self.url(path)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, url, params=query, json=body)
        except httpx.TransportError as exc:
            raise ServiceUnreachableError(
                f"no driftloop service answers at {url} ({exc or type(exc).__name__})", url, None
            ) from None
        if response.is_error:
            raise ControlApiError(
                f"{method} {url} -> {response.status_code}: {response.text}",
                url,
                response.status_code,
            )
        return response.json() if response.content else None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
