"""The Quality and Loop dashboards: what the judges and the retrain loop export."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.panels import (
    MODEL,
    Query,
    model_variable,
    new_dashboard,
    series,
    stat_panel,
    table_panel,
)


def quality_dashboard() -> dash.Dashboard:
    """Judge scores per alias, the judges' own health, and the golden-set gate's verdicts."""
    m = MODEL
    return (
        new_dashboard("driftloop-quality", "driftloop / Quality", quality_dashboard.__doc__ or "")
        .with_variable(model_variable("driftloop_judge_score_mean"))
        .with_row(dash.Row("Judge scores"))
        .with_panel(
            series(
                "Judge score mean (1-5)",
                "Mean judge score over the latest window per alias and judge. Below 3 (the line),"
                " or 0.75 below the previous day, for 10 minutes pages (DriftloopQualityRegression).",
                [Query(f"driftloop_judge_score_mean{m}", "{{model}} {{judge}}")],
                line_at=3,
                min_value=1,
                max_value=5,
                span=16,
            )
        )
        .with_panel(
            stat_panel(
                "Score now",
                "Latest window mean per alias and judge.",
                [Query(f"driftloop_judge_score_mean{m}", "{{model}} {{judge}}")],
                span=8,
            )
        )
        .with_panel(
            series(
                "Judgments in the window",
                "Scored judgments behind each mean; the regression alert needs at least 20.",
                [Query(f"driftloop_judge_window_samples{m}", "{{model}} {{judge}}")],
                span=8,
            )
        )
        .with_panel(
            series(
                "Anchor shift",
                "Mean score on the fixed anchor set minus its first mean: a judge that moves"
                " here changed itself, not the model it scores.",
                [Query("driftloop_judge_anchor_shift", "{{judge}}")],
                span=8,
            )
        )
        .with_panel(
            series(
                "Gate verdicts per day",
                "Golden-set gate decisions on candidate adapters: passed or rejected.",
                [
                    Query(
                        f"sum by (model, decision) (increase(driftloop_gate_decisions_total{m}[1d]))",
                        "{{model}} {{decision}}",
                    )
                ],
                span=8,
            )
        )
        .with_row(dash.Row("Judges"))
        .with_panel(
            series(
                "Evaluations / s by outcome",
                "scored, unparseable, error, budget_exhausted, cached (cached cost nothing).",
                [
                    Query(
                        "sum by (judge, outcome)"
                        " (rate(driftloop_judge_evaluations_total[$__rate_interval]))",
                        "{{judge}} {{outcome}}",
                    )
                ],
                "ops",
                span=8,
            )
        )
        .with_panel(
            series(
                "Judge tokens / s",
                "Prompt plus completion tokens spent by each judge model.",
                [
                    Query(
                        "sum by (judge) (rate(driftloop_judge_tokens_total[$__rate_interval]))",
                        "{{judge}}",
                    )
                ],
                span=8,
            )
        )
        .with_panel(
            series(
                "Budget left (tokens)",
                "Tokens left in each judge's budget for today (UTC).",
                [Query("driftloop_judge_budget_remaining_tokens", "{{judge}}")],
                span=8,
            )
        )
        .with_panel(
            series(
                "Budget exhausted",
                "1 while a judge's token or request budget for today is spent and it stopped"
                " scoring (DriftloopJudgeBudgetExhausted).",
                [Query("driftloop_judge_budget_exhausted", "{{judge}}")],
                span=8,
                min_value=0,
                max_value=1,
            )
        )
        .with_panel(
            series(
                "Judge call time (p95)",
                "One judge call including retries and backoff.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (le, judge)"
                        " (rate(driftloop_judge_request_duration_seconds_bucket[$__rate_interval])))",
                        "{{judge}} p95",
                    )
                ],
                "s",
                span=16,
            )
        )
    )


def loop_dashboard() -> dash.Dashboard:
    """The retrain loop: triggers, runs, stage durations, deployed adapters and rollbacks."""
    m = MODEL
    return (
        new_dashboard("driftloop-loop", "driftloop / Loop", loop_dashboard.__doc__ or "")
        .with_variable(model_variable("driftloop_deployed_adapter_info"))
        .with_row(dash.Row("Deployed"))
        .with_panel(
            table_panel(
                "Deployed adapter",
                "The adapter version each alias routes to now (base when none).",
                [Query(f"driftloop_deployed_adapter_info{m} == 1", "deployed")],
            )
        )
        .with_panel(
            series(
                "Retrain running / paused",
                "1 while a run is in progress; 1 while an operator paused automatic retraining.",
                [
                    Query(f"driftloop_retrain_running{m}", "{{model}} running"),
                    Query(f"driftloop_retrain_paused{m}", "{{model}} paused"),
                ],
            )
        )
        .with_panel(
            series(
                "Training progress",
                "The running (or last) training of each alias: its step, loss and steps/s as the"
                " trainer reports them (local subprocess or Ray task alike).",
                [
                    Query(f"driftloop_training_step{m}", "{{model}} step"),
                    Query(f"driftloop_training_loss{m}", "{{model}} loss"),
                    Query(f"driftloop_training_steps_per_second{m}", "{{model}} steps/s"),
                ],
            )
        )
        .with_row(dash.Row("Runs"))
        .with_panel(
            series(
                "Trigger decisions per hour",
                "Trigger evaluations by kind (drift, quality, volume, schedule, manual) and"
                " decision (triggered, or suppressed by hysteresis, cooldown, pause).",
                [
                    Query(
                        "sum by (model, trigger, decision)"
                        f" (increase(driftloop_retrain_trigger_decisions_total{m}[1h]))",
                        "{{model}} {{trigger}} {{decision}}",
                    )
                ],
                span=8,
            )
        )
        .with_panel(
            series(
                "Retrain runs per day by outcome",
                "Finished runs: shipped, rejected by the gate, or failed (DriftloopRetrainFailed).",
                [
                    Query(
                        f"sum by (model, outcome) (increase(driftloop_retrain_runs_total{m}[1d]))",
                        "{{model}} {{outcome}}",
                    )
                ],
                span=8,
            )
        )
        .with_panel(
            series(
                "Mean stage duration (last day)",
                "Mean time in each stage of a run: dataset, train, gate, deploy.",
                [
                    Query(
                        "sum by (stage) (increase(driftloop_retrain_stage_duration_seconds_sum[1d]))"
                        " / sum by (stage)"
                        " (increase(driftloop_retrain_stage_duration_seconds_count[1d]))",
                        "{{stage}}",
                    )
                ],
                "s",
                span=8,
            )
        )
        .with_panel(
            series(
                "Gate verdicts per day",
                "Golden-set gate decisions (DriftloopGateRejected on a rejection).",
                [
                    Query(
                        f"sum by (model, decision) (increase(driftloop_gate_decisions_total{m}[1d]))",
                        "{{model}} {{decision}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Rollbacks per day",
                "Rollbacks to the previous production adapter, manual or automatic"
                " (DriftloopRollback).",
                [
                    Query(
                        f"sum by (model, reason) (increase(driftloop_rollbacks_total{m}[1d]))",
                        "{{model}} {{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Cost per shipped adapter",
                "What the runs of the last 7 days cost (the trainer's CPU and GPU time at"
                " retrain.price_per_cpu_hour / price_per_gpu_hour), over the adapters they shipped;"
                " and the trainer's CPU- and GPU-seconds per day.",
                [
                    Query(
                        f"sum by (model) (increase(driftloop_retrain_cost_dollars_total{m}[7d]))"
                        " / sum by (model) (increase(driftloop_retrain_runs_total"
                        f'{{model=~"$model",outcome="shipped"}}[7d]))',
                        "{{model}} $ per shipped adapter",
                    ),
                    Query(
                        "sum by (model, resource)"
                        f" (increase(driftloop_retrain_compute_seconds_total{m}[1d]))",
                        "{{model}} {{resource}}-seconds per day",
                    ),
                ],
            )
        )
        .with_panel(
            series(
                "Canary releases",
                "Share of each alias's conversations a running canary gets (0: none), and canary"
                " decisions per day: promoted, rolled_back on live data"
                " (DriftloopCanaryRolledBack), aborted by an operator.",
                [
                    Query(f"max by (model) (driftloop_canary_share{m})", "{{model}} share"),
                    Query(
                        "sum by (model, decision)"
                        f" (increase(driftloop_canary_decisions_total{m}[1d]))",
                        "{{model}} {{decision}}",
                    ),
                ],
            )
        )
    )
