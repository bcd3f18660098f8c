"""Builds the judges from configuration: the rubric LLM judge, rule judges, budget, anchors,
and the calibration the service records for the gate."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from driftloop.config import Config
from driftloop.scheduling import Job
from judges.anchors import AnchorJob
from judges.budget import DailyBudget, spent_in_store
from judges.calibration import calibrate
from judges.calibration_records import record_calibration, recorded_calibrations
from judges.client import Endpoint
from judges.examples import ANCHOR_SET, CALIBRATION_SET, load_examples, set_version
from judges.job import JudgeJob, JudgeSettings
from judges.llm import RubricJudge
from judges.metrics import JudgeMetrics
from judges.plugins import build_rule_judge
from judges.rubric import load_rubric
from judges.runner import Runner
from monitor.aliases import AliasTable
from monitor.store import Store


def rubric_judge(
    cfg: Config, upstream_url: str, upstream_api_key: str | None = None
) -> RubricJudge:
    """The configured LLM judge; its endpoint defaults to the upstream vLLM and its served model."""
    endpoint = Endpoint(
        base_url=cfg.judges.base_url or f"{upstream_url.rstrip('/')}/v1",
        model=cfg.judges.model or cfg.vllm.served_model_name,
        api_key_env=cfg.judges.api_key_env,
        # vLLM's key goes only to vLLM: a separately configured judge keeps judges.api_key_env.
        api_key_value=None if cfg.judges.base_url else upstream_api_key,
        timeout_s=cfg.judges.timeout_s,
        max_retries=cfg.judges.max_retries,
        backoff_s=cfg.judges.backoff_s,
    )
    return RubricJudge(
        load_rubric(cfg.judges.rubric),
        endpoint,
        max_tokens=cfg.judges.max_tokens,
        structured_output=cfg.judges.structured_output,
    )


def judge_jobs(
    cfg: Config,
    store: Store,
    registry: CollectorRegistry,
    aliases: AliasTable,
    upstream_url: str,
    upstream_api_key: str | None,
) -> list[Job]:
    """Judge sampled traffic (LLM + rule judges, budgeted) and re-judge the anchor set."""
    judges_cfg = cfg.judges
    runner = Runner(store, JudgeMetrics(registry), concurrency=judges_cfg.concurrency)
    llm = rubric_judge(cfg, upstream_url, upstream_api_key)
    budget = DailyBudget(
        judges_cfg.daily_token_budget,
        judges_cfg.daily_request_budget,
        spent_on=spent_in_store(store, llm.name),
    )
    rules = [build_rule_judge(kind, params) for kind, params in judges_cfg.rules.items()]
    job = JudgeJob(
        runner,
        [llm, *rules],
        {llm.name: budget},
        JudgeSettings(
            sample_rate=judges_cfg.sample_rate,
            sample_rates=judges_cfg.sample_rates,
            per_alias=judges_cfg.per_alias,
            window_size=judges_cfg.window_size,
        ),
        aliases=aliases.known,
    )
    anchor_path = judges_cfg.anchor_set or ANCHOR_SET
    anchors = AnchorJob(
        runner,
        llm,
        load_examples(anchor_path, labelled=False),
        set_version(anchor_path),
        max_shift=judges_cfg.anchor_max_shift,
        budget=budget,
    )
    return [
        Job("judge", job.run, judges_cfg.interval_s),
        Job("judge-anchors", anchors.run, judges_cfg.anchor_interval_s),
    ]


class Calibrator:
    """``judges calibrate`` inside the service, recorded so the gate can trust the judge."""

    def __init__(
        self, cfg: Config, store: Store, upstream_url: str, upstream_api_key: str | None
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.judge = rubric_judge(cfg, upstream_url, upstream_api_key)

    def run(self, limit: int | None = None) -> dict[str, Any]:
        """Judge the labelled set (its first ``limit`` items), record and return the report."""
        path = self.cfg.judges.calibration_set or CALIBRATION_SET
        examples = load_examples(path)
        report = calibrate(
            self.judge,
            examples[:limit] if limit else examples,
            min_kappa=self.cfg.judges.calibration_min_kappa,
            min_parsed=self.cfg.judges.calibration_min_parsed,
            concurrency=self.cfg.judges.concurrency,
        )
        labelled_set = set_version(path)
        record_calibration(self.store, report, labelled_set)
        return {**report.to_dict(), "labelled_set": labelled_set, "summary": report.summary()}

    def history(self, limit: int) -> list[dict[str, Any]]:
        return recorded_calibrations(self.store, limit)
