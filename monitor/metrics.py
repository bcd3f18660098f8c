"""Prometheus metrics of the sidecar: what users see on /metrics, defined in one place.

Labels are bounded by construction: ``route`` is one of three values, ``status_class`` one of
five, ``reason`` one of the ``DropReason`` values, ``model`` a configured name or ``other``.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond buckets: the sidecar's own cost is what matters, and it is small.
OVERHEAD_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
UPSTREAM_ERROR_KINDS = ("unreachable", "timeout", "protocol_error")
ROUTES = ("chat_completions", "completions", "other")
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class DropReason(StrEnum):
    """Why a sampled exchange never reached DuckDB."""

    QUEUE_FULL = "queue_full"
    BUFFER_FULL = "buffer_full"
    WRITER_DEAD = "writer_dead"
    WRITE_ERROR = "write_error"
    STORE_UNAVAILABLE = "store_unavailable"
    TOO_LARGE = "too_large"
    CAPTURE_ERROR = "capture_error"
    SHUTDOWN = "shutdown"


class RejectReason(StrEnum):
    """Why the sidecar answered a request (or closed a connection) itself instead of forwarding."""

    PATH_NOT_ALLOWED = "path_not_allowed"
    ASTERISK_FORM = "asterisk_form"
    BODY_TOO_LARGE = "body_too_large"
    BODY_TIMEOUT = "body_timeout"
    HEADER_TOO_LARGE = "header_too_large"
    HEADER_TIMEOUT = "header_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    CONNECTION_LIMIT = "connection_limit"


class SidecarMetrics:
    """All sidecar metrics, registered on the registry passed in (tests use a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "driftloop_proxy_requests_total",
            "Requests proxied, by route and upstream status class.",
            ["route", "status_class"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "driftloop_proxy_requests_in_flight",
            "Requests the sidecar is handling right now.",
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "driftloop_proxy_upstream_latency_seconds",
            "Time from sending a request upstream to its last response byte.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "driftloop_proxy_overhead_seconds",
            "Time a request spends in the sidecar outside the upstream exchange.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "driftloop_proxy_upstream_errors_total",
            "Requests the upstream could not answer, by kind (unreachable, timeout, protocol_error).",
            ["kind"],
            registry=registry,
        )
        self.client_disconnects = Counter(
            "driftloop_proxy_client_disconnects_total",
            "Requests whose client went away before the response ended; upstream was cancelled.",
            ["route"],
            registry=registry,
        )
        # zeros for every series, so the first error after a restart shows up in rate()
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind=kind)
        self.rejected = Counter(
            "driftloop_proxy_rejected_total",
            "Requests or connections the sidecar answered or closed itself, by reason"
            " (path_not_allowed, asterisk_form, body_too_large, body_timeout, header_too_large,"
            " header_timeout, idle_timeout, connection_limit).",
            ["reason"],
            registry=registry,
        )
        self.broken_responses = Counter(
            "driftloop_proxy_broken_responses_total",
            "Upstream answers that closed or stalled mid-body: a whole one becomes a 502/504, a stream is aborted.",
            ["route"],
            registry=registry,
        )
        for route in ROUTES:
            self.client_disconnects.labels(route=route)
            self.broken_responses.labels(route=route)
        for reject in RejectReason:
            self.rejected.labels(reason=reject.value)
        self.capture_decisions = Counter(
            "driftloop_capture_decisions_total",
            "Capture-eligible requests by model and sampling decision (forced, skipped, sampled_in,"
            " sampled_out).",
            ["model", "decision"],
            registry=registry,
        )
        self.captured = Counter(
            "driftloop_capture_enqueued_total",
            "Exchanges handed to the capture writer.",
            registry=registry,
        )
        self.dropped = Counter(
            "driftloop_capture_dropped_total",
            "Sampled exchanges lost before reaching DuckDB, by reason (queue_full, buffer_full,"
            " writer_dead, write_error, store_unavailable, too_large, capture_error, shutdown).",
            ["reason"],
            registry=registry,
        )
        for reason in DropReason:  # export zeros so alerts and dashboards see every series
            self.dropped.labels(reason=reason.value)
        self.rows_written = Counter(
            "driftloop_capture_rows_written_total",
            "Rows appended to the requests table.",
            registry=registry,
        )
        self.flush_duration = Histogram(
            "driftloop_capture_flush_duration_seconds",
            "Time to convert and append one batch to DuckDB.",
            buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "driftloop_capture_queue_depth",
            "Exchanges waiting in memory for the writer.",
            registry=registry,
        )
        self.writer_up = Gauge(
            "driftloop_capture_writer_up",
            "1 while the capture writer thread is alive, its store is open and writes succeed.",
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "driftloop_capture_buffer_bytes",
            "Bytes of captured bodies held in memory for the writer (bounded by max_buffer_bytes).",
            registry=registry,
        )
        self.write_failures = Counter(
            "driftloop_capture_write_failures_total",
            "Batch appends that failed; their rows stay buffered and are retried.",
            registry=registry,
        )
        self.store_reopens = Counter(
            "driftloop_capture_store_reopens_total",
            "Times the capture store was opened again: late after a failed start, or because"
            " its file was deleted, replaced or invalidated.",
            registry=registry,
        )
        self.writer_restarts = Counter(
            "driftloop_capture_writer_restarts_total",
            "Times the capture writer thread died and was started again.",
            registry=registry,
        )
        self.row_builder_failures = Counter(
            "driftloop_capture_row_builder_failures_total",
            "Batches the row builder process failed to convert (the writer converted them itself"
            " and the process was restarted).",
            registry=registry,
        )

    def reject(self, reason: RejectReason) -> None:
        self.rejected.labels(reason=reason.value).inc()

    def drop(self, reason: DropReason, count: int = 1) -> None:
        self.dropped.labels(reason=reason.value).inc(count)


def status_class(status: int) -> str:
    """``2xx`` … ``5xx``; anything else (0 for no response) is ``error``."""
    return f"{status // 100}xx" if 100 <= status < 600 else "error"


class DriftMetrics:
    """Gauges of the latest drift evaluation per signal and model, plus the embedding backlog."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["signal", "model"]
        self.score = Gauge(
            "driftloop_drift_score", "Latest drift statistic.", labels, registry=registry
        )
        self.threshold = Gauge(
            "driftloop_drift_threshold",
            "Score the statistic must exceed at the current window sizes (calibrated).",
            labels,
            registry=registry,
        )
        self.p_value = Gauge(
            "driftloop_drift_p_value",
            "Permutation p-value of the latest score.",
            labels,
            registry=registry,
        )
        self.detected = Gauge(
            "driftloop_drift_detected",
            "1 when the latest evaluation tripped (p-value, effect size and sample size).",
            labels,
            registry=registry,
        )
        self.window_samples = Gauge(
            "driftloop_drift_window_samples",
            "Samples in the reference and current windows of the latest evaluation.",
            [*labels, "window"],
            registry=registry,
        )
        self.effective_samples = Gauge(
            "driftloop_drift_effective_samples",
            "Effective sample size of each window (n over the sessions' design effect).",
            [*labels, "window"],
            registry=registry,
        )
        self.adjusted_p_value = Gauge(
            "driftloop_drift_adjusted_p_value",
            "Holm-adjusted p-value across the model's signals (what the combined decision uses).",
            labels,
            registry=registry,
        )
        self.min_detectable_shift = Gauge(
            "driftloop_drift_min_detectable_shift_ratio",
            "Share of traffic moving to a new topic that the current windows catch with 90% power.",
            labels,
            registry=registry,
        )
        self.runs = Counter(
            "driftloop_drift_runs_total",
            "Drift evaluations per model and outcome (drifted, clear, insufficient).",
            ["model", "outcome"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "driftloop_drift_run_duration_seconds",
            "Time to evaluate every signal of one model.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.embeddings_written = Counter(
            "driftloop_embeddings_written_total",
            "Prompt and response vectors stored.",
            registry=registry,
        )
