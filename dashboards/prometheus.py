"""A small Prometheus HTTP API client (instant and range queries) for rendering and checking panels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx


class PrometheusQueryError(RuntimeError):
    """Prometheus rejected a query or could not be reached; the message names the query."""


@dataclass(frozen=True)
class Series:
    """One result series: its labels and (unix time, value) points; NaN and Inf points dropped."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class PrometheusClient:
    """Queries one Prometheus server over ``/api/v1``; the HTTP client is passed in."""

    def __init__(self, base_url: str, http: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            response = self.http.get(self.base_url + path, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusQueryError(
                f"Prometheus at {self.base_url} unreachable: {exc}"
            ) from None
        body = response.json() if response.content else {}
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusQueryError(
                f"Prometheus refused {params.get('query')!r}: HTTP {response.status_code}"
                f" {body.get('errorType', '')}: {body.get('error', response.text[:200])}"
            )
        return body["data"]

    def query(self, expr: str, at: float) -> list[Series]:
        """An instant query at unix time ``at``."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if data["resultType"] == "scalar":
            return _finite([Series({}, [(float(data["result"][0]), float(data["result"][1]))])])
        return _finite(
            [
                Series(item["metric"], [(float(item["value"][0]), float(item["value"][1]))])
                for item in data["result"]
            ]
        )

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query from ``start`` to ``end`` every ``step`` seconds."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        return _finite(
            [
                Series(item["metric"], [(float(t), float(v)) for t, v in item["values"]])
                for item in data["result"]
            ]
        )

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds now (pending and firing)."""
        return list(self._get("/api/v1/alerts", {})["alerts"])


def _finite(series: list[Series]) -> list[Series]:
    """Drop NaN/Inf points (a histogram quantile with no observations) and series left empty."""
    kept = []
    for item in series:
        points = [(t, v) for t, v in item.points if math.isfinite(v)]
        if points:
            kept.append(Series(item.labels, points))
    return kept


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend substitution."""
    if not template:
        return (
            ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
        )
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
    return out
