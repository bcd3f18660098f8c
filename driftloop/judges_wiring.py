"""Builds the judges from configuration: the rubric LLM judge, rule judges, budget, anchors,
and the calibration the service records for the gate."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
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

log = logging.getLogger(__name__)


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


class CalibrationRunning(RuntimeError):
    """A calibration is already under way: one at a time, since each asks the judge ~80 times."""


class Calibrator:
    """``judges calibrate`` inside the service, recorded so the gate can trust the judge.

    A calibration takes minutes on a CPU, so the API starts it in a background thread
    (``start``) and reports its progress (``state``); ``run`` is the same work, blocking.
    """

    def __init__(
        self, cfg: Config, store: Store, upstream_url: str, upstream_api_key: str | None
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.judge = rubric_judge(cfg, upstream_url, upstream_api_key)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"running": False}

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

    def start(self, limit: int | None = None) -> dict[str, Any]:
        """Start ``run`` in the background; raises CalibrationRunning while one is under way."""
        with self._lock:
            if self._state["running"]:
                raise CalibrationRunning(
                    f"a calibration is already running (started {self._state['started_at']})"
                )
            self._state = {"running": True, "limit": limit, "started_at": _now()}
            self._thread = threading.Thread(
                target=self._run_in_background, args=(limit,), name="judge-calibration", daemon=True
            )
            self._thread.start()
            return dict(self._state)

    def state(self) -> dict[str, Any]:
        """The running calibration, or the last one's outcome (its summary or its error)."""
        with self._lock:
            return dict(self._state)

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait a little for a running calibration; a daemon thread, it never holds up exit."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run_in_background(self, limit: int | None) -> None:
        outcome: dict[str, Any]
        try:
            report = self.run(limit)
            outcome = {k: report[k] for k in ("summary", "kappa", "flagged", "labelled_set")}
        except Exception as exc:  # an unreachable judge or a bad set: reported, not raised
            log.warning("judge calibration failed: %s", exc)
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        with self._lock:
            self._state = {**self._state, **outcome, "running": False, "finished_at": _now()}

    def history(self, limit: int) -> list[dict[str, Any]]:
        return recorded_calibrations(self.store, limit)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
