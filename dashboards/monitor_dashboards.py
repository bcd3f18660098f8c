"""The Drift and Traffic dashboards: what the sidecar and the drift engine (monitor/) export."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.panels import (
    MODEL,
    Query,
    model_variable,
    new_dashboard,
    note,
    series,
    stat_panel,
    table_panel,
)


def drift_dashboard() -> dash.Dashboard:
    """Every drift signal's score against its calibrated threshold, p-values and window sizes."""
    m = MODEL
    return (
        new_dashboard("driftloop-drift", "driftloop / Drift", drift_dashboard.__doc__ or "")
        .with_variable(model_variable("driftloop_drift_score"))
        .with_row(dash.Row("Signals"))
        .with_panel(
            series(
                "Score / calibrated threshold",
                "Each signal's latest statistic divided by its permutation-calibrated threshold at"
                " the current window sizes: above 1 the score is beyond what chance gives at"
                " alpha. Trips also need enough samples (driftloop_drift_detected).",
                [
                    Query(
                        f"driftloop_drift_score{m} / (driftloop_drift_threshold{m} > 0)",
                        "{{model}} {{signal}}",
                    )
                ],
                line_at=1,
            )
        )
        .with_panel(
            series(
                "p-value",
                "Permutation p-value of each signal's latest score (log scale); the line is the"
                " default drift.alpha of 0.01.",
                [Query(f"driftloop_drift_p_value{m}", "{{model}} {{signal}}")],
                log=True,
                line_at=0.01,
            )
        )
        .with_panel(
            table_panel(
                "Latest evaluation",
                "Score, calibrated threshold, p-value and verdict (1 = tripped) of every signal.",
                [
                    Query(f"driftloop_drift_score{m}", "score"),
                    Query(f"driftloop_drift_threshold{m}", "threshold"),
                    Query(f"driftloop_drift_p_value{m}", "p-value"),
                    Query(f"driftloop_drift_detected{m}", "detected"),
                ],
                span=24,
            )
        )
        .with_row(dash.Row("The decision, and what a window can see"))
        .with_panel(
            stat_panel(
                "Combined decision",
                "The alias-level verdict the retrain trigger and DriftloopDriftDetected read:"
                " every signal Holm-adjusted, family-wise error rate drift.alpha (1 = drifted).",
                [
                    Query(
                        'max by (model) (driftloop_drift_detected{model=~"$model",'
                        'signal="combined"})',
                        "{{model}}",
                    )
                ],
                span=6,
            )
        )
        .with_panel(
            series(
                "Adjusted p-value (Holm)",
                "Each signal's p-value after the Holm adjustment over the alias's family (log"
                " scale); the combined decision trips when the smallest is below drift.alpha.",
                [Query(f"driftloop_drift_adjusted_p_value{m}", "{{model}} {{signal}}")],
                log=True,
                line_at=0.01,
                span=6,
            )
        )
        .with_panel(
            series(
                "Effective samples",
                "Window size divided by the sessions' design effect: turns of one conversation"
                " are alike, so n turns carry fewer independent samples.",
                [
                    Query(
                        f"max by (model, window) (driftloop_drift_effective_samples{m})",
                        "{{model}} {{window}}",
                    )
                ],
                span=6,
            )
        )
        .with_panel(
            series(
                "Minimum detectable shift (90% power)",
                "The smallest share of traffic moving to a distinct topic that the current"
                " windows would catch nine times out of ten.",
                [
                    Query(
                        f"driftloop_drift_min_detectable_shift_ratio{m}",
                        "{{model}} {{signal}}",
                    )
                ],
                "percentunit",
                span=6,
            )
        )
        .with_row(dash.Row("Windows and runs"))
        .with_panel(
            stat_panel(
                "Signals tripped",
                "How many signals of each alias report drift right now.",
                [Query(f"sum by (model) (driftloop_drift_detected{m})", "{{model}}")],
                span=6,
            )
        )
        .with_panel(
            series(
                "Window sizes",
                "Exchanges in the reference and current windows of the latest evaluation; a"
                " signal may trip only when both hold drift.min_samples.",
                [
                    Query(
                        f"max by (model, window) (driftloop_drift_window_samples{m})",
                        "{{model}} {{window}}",
                    )
                ],
                span=9,
            )
        )
        .with_panel(
            series(
                "Evaluations per hour by outcome",
                "Drift evaluations per alias: drifted, clear, or insufficient (too few samples).",
                [
                    Query(
                        f"sum by (model, outcome) (increase(driftloop_drift_runs_total{m}[1h]))",
                        "{{model}} {{outcome}}",
                    )
                ],
                span=9,
            )
        )
        .with_panel(
            series(
                "Evaluation time (p95)",
                "Time to evaluate every signal of one alias.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (le)"
                        " (rate(driftloop_drift_run_duration_seconds_bucket[$__rate_interval])))",
                        "p95",
                    )
                ],
                "s",
            )
        )
        .with_panel(
            series(
                "Embeddings written / s",
                "Prompt and response vectors the embedding job stores; flat at 0 with traffic"
                " flowing means the embedding worker is stuck.",
                [
                    Query(
                        "sum(rate(driftloop_embeddings_written_total[$__rate_interval]))", "vectors"
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            note(
                "Which clusters drifted",
                "The clusters that grew most, with example prompts, are in the drift report:"
                " `driftloop drift report` (or `GET /api/v1/drift/latest`). Cluster ids are not"
                " metric labels on purpose: they change with every evaluation and would make"
                " unbounded series.",
                span=24,
            )
        )
    )


def traffic_dashboard() -> dash.Dashboard:
    """What the sidecar proxies, what it costs, what it captures, beside vLLM's own metrics."""
    ri = "[$__rate_interval]"
    return (
        new_dashboard("driftloop-traffic", "driftloop / Traffic", traffic_dashboard.__doc__ or "")
        .with_row(dash.Row("Requests"))
        .with_panel(
            series(
                "Requests / s by route and status",
                "Requests proxied by the sidecar, by route and upstream status class.",
                [
                    Query(
                        f"sum by (route, status_class) (rate(driftloop_proxy_requests_total{ri}))",
                        "{{route}} {{status_class}}",
                    )
                ],
                "reqps",
            )
        )
        .with_panel(
            series(
                "In flight: sidecar and vLLM",
                "Requests the sidecar is handling, beside vLLM's running and waiting requests.",
                [
                    Query("sum(driftloop_proxy_requests_in_flight)", "sidecar in flight"),
                    Query("sum(vllm:num_requests_running)", "vLLM running"),
                    Query("sum(vllm:num_requests_waiting)", "vLLM waiting"),
                ],
            )
        )
        .with_panel(
            series(
                "Sidecar overhead (p50, p99)",
                "Time a request spends in the sidecar outside the upstream exchange.",
                [
                    Query(
                        "histogram_quantile(0.5, sum by (le)"
                        f" (rate(driftloop_proxy_overhead_seconds_bucket{ri})))",
                        "p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le)"
                        f" (rate(driftloop_proxy_overhead_seconds_bucket{ri})))",
                        "p99",
                    ),
                ],
                "s",
            )
        )
        .with_panel(
            series(
                "Latency (p95): through the sidecar vs vLLM end to end",
                "Upstream exchange time measured by the sidecar, beside vLLM's own end-to-end"
                " request latency and time to first token.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (le)"
                        f" (rate(driftloop_proxy_upstream_latency_seconds_bucket{ri})))",
                        "sidecar upstream p95",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le)"
                        f" (rate(vllm:e2e_request_latency_seconds_bucket{ri})))",
                        "vLLM e2e p95",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le)"
                        f" (rate(vllm:time_to_first_token_seconds_bucket{ri})))",
                        "vLLM TTFT p95",
                    ),
                ],
                "s",
            )
        )
        .with_panel(
            series(
                "Upstream errors and client disconnects / s",
                "Requests vLLM could not answer (DriftloopUpstreamErrors pages above 5%), and"
                " clients that went away mid-response (the upstream request was cancelled).",
                [
                    Query(
                        f"sum by (kind) (rate(driftloop_proxy_upstream_errors_total{ri}))",
                        "upstream {{kind}}",
                    ),
                    Query(
                        f"sum by (route) (rate(driftloop_proxy_client_disconnects_total{ri}))",
                        "disconnect {{route}}",
                    ),
                ],
                "reqps",
            )
        )
        .with_panel(
            series(
                "Refused client requests and broken upstream answers / s",
                "Requests the sidecar answered itself (paths not forwarded, client limits: body,"
                " headers, timeouts, connection cap), and upstream answers that broke mid-way"
                " (a stream aborted for the client, or a whole answer turned into a 502/504).",
                [
                    Query(
                        f"sum by (reason) (rate(driftloop_proxy_rejected_total{ri}))",
                        "refused {{reason}}",
                    ),
                    Query(
                        f"sum by (route) (rate(driftloop_proxy_broken_responses_total{ri}))",
                        "broken {{route}}",
                    ),
                ],
                "reqps",
            )
        )
        .with_panel(
            series(
                "vLLM tokens / s and KV cache",
                "Prompt and generated tokens vLLM processes, and its KV cache use (0-1).",
                [
                    Query(f"sum(rate(vllm:prompt_tokens_total{ri}))", "prompt tokens"),
                    Query(f"sum(rate(vllm:generation_tokens_total{ri}))", "generated tokens"),
                    Query("max(vllm:kv_cache_usage_perc)", "KV cache use"),
                ],
            )
        )
        .with_row(dash.Row("Capture"))
        .with_panel(
            series(
                "Capture: sampled, written, dropped / s",
                "Sampling decisions, exchanges handed to the writer, rows appended to DuckDB,"
                " and losses by reason (DriftloopCaptureDropping above 1%).",
                [
                    Query(
                        f"sum by (decision) (rate(driftloop_capture_decisions_total{ri}))",
                        "{{decision}}",
                    ),
                    Query(f"sum(rate(driftloop_capture_enqueued_total{ri}))", "enqueued"),
                    Query(f"sum(rate(driftloop_capture_rows_written_total{ri}))", "written"),
                    Query(
                        f"sum by (reason) (rate(driftloop_capture_dropped_total{ri}))",
                        "dropped {{reason}}",
                    ),
                ],
                "ops",
            )
        )
        .with_panel(
            series(
                "Capture writer",
                "Exchanges waiting in memory, writer liveness (1 = up, 0 while writes fail), and"
                " in the last hour: writer restarts, row builder failures (batches the writer"
                " built itself), failed writes (retried) and store reopens (the file was deleted"
                " or replaced). DriftloopCaptureStoreFailing warns.",
                [
                    Query("sum(driftloop_capture_queue_depth)", "queue depth"),
                    Query("min(driftloop_capture_writer_up)", "writer up"),
                    Query(
                        "sum(increase(driftloop_capture_writer_restarts_total[1h]))",
                        "restarts (1h)",
                    ),
                    Query(
                        "sum(increase(driftloop_capture_row_builder_failures_total[1h]))",
                        "row builder failures (1h)",
                    ),
                    Query(
                        "sum(increase(driftloop_capture_write_failures_total[1h]))",
                        "failed writes (1h)",
                    ),
                    Query(
                        "sum(increase(driftloop_capture_store_reopens_total[1h]))",
                        "store reopens (1h)",
                    ),
                ],
            )
        )
        .with_panel(
            series(
                "Adapter agents (fleet)",
                "Per sidecar: wanted adapter versions its vLLM holds, versions it could not load"
                " on the last pass (a rollout waits for or stops on these), and loads and unloads"
                " in the last hour.",
                [
                    Query("sum by (sidecar) (driftloop_adapter_agent_held)", "{{sidecar}} held"),
                    Query(
                        "sum by (sidecar) (driftloop_adapter_agent_failing)", "{{sidecar}} failing"
                    ),
                    Query(
                        "sum by (action, outcome)"
                        " (increase(driftloop_adapter_agent_changes_total[1h]))",
                        "{{action}} {{outcome}} (1h)",
                    ),
                ],
            )
        )
        .with_panel(
            series(
                "Capture buffer (bytes)",
                "Captured bytes waiting in memory for the writer; captures are dropped"
                " (buffer_full) once capture.max_buffer_bytes is reached.",
                [Query("sum(driftloop_capture_buffer_bytes)", "buffered")],
                "bytes",
            )
        )
        .with_panel(
            series(
                "DuckDB flush time (p95)",
                "Time to convert and append one batch of captured rows.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (le)"
                        f" (rate(driftloop_capture_flush_duration_seconds_bucket{ri})))",
                        "p95",
                    )
                ],
                "s",
                span=12,
            )
        )
    )
