"""Builds the retrain loop from configuration: trainer subprocess, golden-set gate, deployer.

Wiring only: what each stage does lives in ``retrain/``; this module picks the implementations
(training in a niced subprocess, the gate over vLLM's OpenAI API) and their settings. One box
loads versions into its one vLLM and switches its alias table; a fleet (``FleetDeployment``)
places them on every replica and switches the routing table the sidecars follow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from openai import OpenAI
from prometheus_client import CollectorRegistry

from driftloop.config import Config, ConfigError
from driftloop.config.loop import read_few_shot
from driftloop.judges_wiring import Calibrator, rubric_judge
from driftloop.sidecar_role import store_access
from judges.budget import DailyBudget
from judges.client import Endpoint, RetryPolicy
from judges.pairwise import PairwiseJudge
from judges.plugins import build_rule_judge
from monitor.aliases import AliasTable
from monitor.store import Store
from monitor.vllm_admin import VLLMAdmin
from retrain.adapter_registry import Adapter, AdapterRegistry
from retrain.cost import ComputePrices
from retrain.data.dataset import DatasetSettings
from retrain.data.files import Dataset, load_dataset
from retrain.data.sources import count_examples
from retrain.data.teacher import Teacher, TeacherJudge, TeacherSettings, teacher_spent
from retrain.gate.gate import GateJudge, GatePolicy, run_gate
from retrain.gate.golden import (
    LIVE_SLICE,
    GoldenSet,
    golden_prompts,
    load_golden_set,
    with_live_slice,
)
from retrain.gate.judge import CalibratedJudge
from retrain.gate.report import write_report
from retrain.loop import GateOutcome, LoopSettings, RetrainLoop, TooFewExamples, TrainedAdapter
from retrain.metrics import LoopMetrics
from retrain.serving.canary import CanaryRelease, CanarySettings
from retrain.serving.deploy import AliasSwitch, Deployer, Placement, Route
from retrain.serving.fleet import FleetPlacement
from retrain.serving.guard import GuardSettings, PostDeployGuard
from retrain.training.job import run_training
from retrain.training.ray_executor import RayExecutor
from retrain.training.spec import TrainingLimits, TrainingProgress, TrainingResult, TrainingSpec
from retrain.triggers import Triggers, TriggerSettings

log = logging.getLogger(__name__)


# The judges' retry policy (judges/client.py), with the numbers the gate had from the openai SDK
# until now (2 retries, 0.5 s doubling up to 8 s): one policy for every OpenAI-compatible call.
GATE_RETRY = RetryPolicy(max_retries=2, backoff_s=0.5, max_backoff_s=8.0)


@dataclass(frozen=True)
class FleetDeployment:
    """How the controller ships: every replica's agent, the fleet's routing table, an eval replica."""

    placement: FleetPlacement
    switch: AliasSwitch
    eval_sidecar: str  # its vLLM is the controller's sidecar.upstream_url, where the gate runs


@dataclass
class RetrainParts:
    loop: RetrainLoop
    admin: VLLMAdmin
    calibrator: Calibrator  # records the judge's calibration the gate trusts (or not)

    def close(self) -> None:
        self.calibrator.close()  # before the store closes under it
        self.admin.close()


def build_retrain(
    cfg: Config,
    store: Store,
    registry: CollectorRegistry,
    aliases: AliasTable,
    upstream_url: str,
    base_model_dir: Path,
    retrain_aliases: Callable[[], list[str]],
    upstream_api_key: str | None = None,
    fleet: FleetDeployment | None = None,
) -> RetrainParts:
    """The loop for every alias ``retrain_aliases()`` names (configured aliases only).

    The gate calls the vLLM at ``upstream_url`` directly (not through a sidecar) with
    ``upstream_api_key``; on one box the deployer loads versions there too.
    """
    r = cfg.retrain
    work = cfg.cache_dir.absolute() / "retrain"  # paths go to a subprocess and to vLLM
    metrics = LoopMetrics(registry)
    admin = VLLMAdmin(upstream_url, api_key=upstream_api_key)
    models = AdapterRegistry(store)
    placement: Placement = admin
    switch: AliasSwitch = aliases
    load_for_gate: Callable[[str, str], None] = admin.load
    if fleet is not None:
        placement, switch = fleet.placement, fleet.switch
        eval_sidecars = [fleet.eval_sidecar]

        def load_for_gate(name: str, path: str) -> None:
            fleet.placement.load(name, path, sidecars=eval_sidecars)

    deployer = Deployer(
        models,
        placement,
        switch,
        metrics,
        base_model=cfg.vllm.served_model_name,
        keep_versions=r.keep_versions,
    )
    golden = {alias: golden_set_for(cfg, alias) for alias in retrain_aliases()}
    settings = _loop_settings(cfg, work, golden)
    teacher = build_teacher(cfg, store, upstream_url, upstream_api_key)
    triggers = _triggers(cfg, store, metrics, settings.lock_dir, teacher)
    client = _gate_client(upstream_url, upstream_api_key)
    loop = RetrainLoop(
        store,
        models,
        deployer,
        triggers,
        metrics,
        settings,
        trainer=subprocess_trainer(
            cfg, base_model_dir, work / "adapters", training_executor(cfg), deployer.current
        ),
        gate=GoldenGate(
            cfg,
            client,
            load_for_gate,
            golden,
            work / "reports",
            settings.datasets_dir,
            judge=_gate_judge(cfg, store, upstream_url, upstream_api_key),
        ),
        aliases=retrain_aliases,
        guard=_post_deploy_guard(cfg, deployer),
        canary=CanaryRelease(deployer, switch, metrics, canary_settings(cfg)),
        teacher=teacher,
    )
    if r.seed_dataset is not None:
        for alias in retrain_aliases():
            loop.register_seed_dataset(alias, r.seed_dataset)
    return RetrainParts(loop, admin, Calibrator(cfg, store, upstream_url, upstream_api_key))


def _loop_settings(cfg: Config, work: Path, golden: dict[str, GoldenSet]) -> LoopSettings:
    """Where the loop keeps datasets and locks, and which golden prompts it keeps out of training."""
    r = cfg.retrain
    return LoopSettings(
        datasets_dir=work / "datasets",
        lock_dir=work / "locks",
        golden_prompts=tuple(golden_prompts(list(golden.values()))),
        judged_min_score=r.judged_min_score,
        min_examples=r.min_examples,
        dataset=DatasetSettings(
            replay_share=r.replay_share,
            live_slice_share=cfg.teacher.live_slice_share if cfg.teacher.enabled else 0.0,
        ),
        auto_deploy=r.auto_deploy,
        prices=ComputePrices(r.price_per_cpu_hour, r.price_per_gpu_hour),
        train_cpus=r.ray_num_cpus if r.executor == "ray" else float(r.train_threads),
        train_gpus=r.ray_num_gpus if r.executor == "ray" else 0.0,
    )


def _gate_judge(
    cfg: Config, store: Store, upstream_url: str, upstream_api_key: str | None
) -> CalibratedJudge | None:
    """The configured LLM judge as the gate asks it: pairwise, trusted only once calibrated."""
    if not cfg.retrain.gate_judge:
        return None
    rubric = rubric_judge(cfg, upstream_url, upstream_api_key)
    pairwise = PairwiseJudge(
        rubric.rubric, rubric.endpoint, concurrency=cfg.retrain.gate_concurrency
    )
    return CalibratedJudge(
        store,
        pairwise,
        rubric.name,
        min_kappa=cfg.judges.calibration_min_kappa,
        min_parsed=cfg.judges.calibration_min_parsed,
        margin=cfg.retrain.gate_margin,
    )


def build_teacher(
    cfg: Config, store: Store, upstream_url: str, upstream_api_key: str | None
) -> Teacher | None:
    """The configured teacher (None when off); its endpoint defaults to the upstream vLLM."""
    t = cfg.teacher
    if not t.enabled:
        return None
    endpoint = Endpoint(
        base_url=t.base_url or f"{upstream_url.rstrip('/')}/v1",
        model=t.model or cfg.vllm.served_model_name,
        api_key_env=t.api_key_env,
        # vLLM's key goes only to vLLM: a separately configured teacher keeps its own key env.
        api_key_value=None if t.base_url else upstream_api_key,
        timeout_s=t.timeout_s,
        max_retries=t.max_retries,
        backoff_s=t.backoff_s,
    )
    settings = TeacherSettings(
        endpoint,
        t.system_prompt,
        examples=read_few_shot(t.examples) if t.examples else (),
        format_pattern=t.format_pattern or None,
        max_tokens=t.max_tokens,
        concurrency=t.concurrency,
        max_prompts=t.max_prompts,
    )
    budget = DailyBudget(
        t.daily_token_budget,
        t.daily_request_budget,
        spent_on=teacher_spent(store, endpoint.model),
    )
    rules = [build_rule_judge(kind, params) for kind, params in t.rules.items()]
    judge = None
    if t.judge:
        judge = TeacherJudge(
            rubric_judge(cfg, upstream_url, upstream_api_key),
            t.judge_min_score,
            min_kappa=cfg.judges.calibration_min_kappa,
            min_parsed=cfg.judges.calibration_min_parsed,
        )
    return Teacher(store, settings, rules, budget, judge=judge)


def _triggers(
    cfg: Config, store: Store, metrics: LoopMetrics, lock_dir: Path, teacher: Teacher | None
) -> Triggers:
    """The drift, quality, volume and schedule triggers, with the config's thresholds."""
    r = cfg.retrain

    def available(alias: str) -> int:
        found = count_examples(store, alias, r.judged_min_score)
        return found + (teacher.available(alias) if teacher is not None else 0)

    return Triggers(
        store,
        metrics,
        TriggerSettings(
            drift_signals=tuple(r.drift_signals),
            drift_consecutive=r.drift_consecutive,
            quality_bar=r.quality_bar,
            quality_window=cfg.judges.window_size,
            quality_min_samples=r.quality_min_samples,
            volume_examples=r.volume_examples,
            schedule_s=r.schedule_s,
            cooldown_s=r.cooldown_s,
            min_examples=r.min_examples,
        ),
        lock_dir=lock_dir,
        available_examples=available,
    )


def _gate_client(upstream_url: str, upstream_api_key: str | None) -> OpenAI:
    """The gate's OpenAI client for vLLM; it retries with GATE_RETRY, not the SDK's own."""
    # A vLLM without a key accepts any; the SDK insists on one.
    return OpenAI(
        base_url=f"{upstream_url}/v1", api_key=upstream_api_key or "driftloop", max_retries=0
    )


def _post_deploy_guard(cfg: Config, deployer: Deployer) -> PostDeployGuard:
    """The guard that rolls a new deployment back when errors or judge scores go bad."""
    r = cfg.retrain
    return PostDeployGuard(
        deployer,
        GuardSettings(
            watch_s=r.rollback_watch_s,
            min_samples=r.rollback_min_samples,
            max_error_rate=r.rollback_max_error_rate,
            min_judge_score=r.rollback_min_judge_score,
        ),
    )


def canary_settings(cfg: Config) -> CanarySettings:
    r = cfg.retrain
    return CanarySettings(
        share=r.canary_share,
        min_requests=r.canary_min_requests,
        alpha=r.canary_alpha,
        max_duration_s=r.canary_max_duration_s,
    )


def golden_set_for(cfg: Config, alias: str) -> GoldenSet:
    ref = cfg.retrain.golden_sets.get(alias) or cfg.retrain.golden_sets.get("*")
    if ref is None:
        raise ValueError(f"retrain.golden_sets names no golden set for {alias!r} (nor '*')")
    name, _, version = ref.partition("@")
    return load_golden_set(name, version or None)


def training_executor(cfg: Config) -> Callable[..., TrainingResult]:
    """``run_training`` here, or the same on a Ray cluster (``retrain.executor``)."""
    r = cfg.retrain
    if r.executor == "local":
        return run_training
    if not r.ray_address or not cfg.fleet.object_store_url:
        raise ConfigError(
            "retrain.executor = 'ray' needs retrain.ray_address and fleet.object_store_url"
            " (the trainer gets its dataset and returns its adapter through object storage)"
        )
    store = store_access(cfg)
    return RayExecutor(r.ray_address, store, r.ray_num_cpus, r.ray_num_gpus, dict(r.ray_resources))


def training_method(cfg: Config, alias: str) -> str:
    methods = cfg.retrain.training_methods
    return methods.get(alias) or methods.get("*") or "sft"


def subprocess_trainer(
    cfg: Config,
    base_model_dir: Path,
    adapters_dir: Path,
    execute: Callable[..., TrainingResult] = run_training,
    production: Callable[[str], Route] | None = None,
) -> Callable[..., TrainedAdapter]:
    """LoRA SFT or DPO in a niced subprocess (``retrain.training.job``), here or on Ray, capped
    by the config. A DPO run's reference is what ``production`` says the alias serves."""
    r = cfg.retrain
    limits = TrainingLimits(
        max_learning_rate=r.max_learning_rate,
        max_steps=r.max_steps_cap,
        max_rank=cfg.vllm.max_lora_rank,
    )

    def train(
        dataset: Dataset,
        on_progress: Callable[[TrainingProgress], None],
        cancel: threading.Event | None = None,
    ) -> TrainedAdapter:
        if not (base_model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"base model folder {base_model_dir} has no config.json: run `driftloop model"
                " prepare`, or set retrain.base_model_dir"
            )
        alias = dataset.path.parent.name  # the loop writes an alias's datasets to <root>/<alias>
        method = training_method(cfg, alias)
        reference = None
        if method == "dpo":
            pairs = dataset.manifest.get("counts", {}).get("preference_pairs", {}).get("train", 0)
            if not pairs:
                raise TooFewExamples(
                    f"retrain.training_methods says dpo for {alias}, and dataset {dataset.id}"
                    " has no preference pairs (feedback with a rejected answer, or corrections"
                    " of captured answers)"
                )
            served = production(alias).adapter if production is not None else None
            reference = Path(served.path) if served is not None else None
        spec = TrainingSpec(
            base_model=base_model_dir,
            dataset=dataset.path,
            output_root=adapters_dir,
            rank=r.lora_rank,
            alpha=r.lora_alpha,
            learning_rate=r.learning_rate,
            max_steps=r.max_steps,
            batch_size=r.batch_size,
            time_limit_s=r.train_time_limit_s,
            threads=r.train_threads,
            method=method,
            dpo_beta=r.dpo_beta,
            reference_adapter=reference,
        )
        result = execute(spec, limits=limits, on_progress=on_progress, cancel=cancel)
        return TrainedAdapter(
            result.adapter.id,
            result.adapter_path,
            {
                "steps": result.steps,
                "train_loss": result.train_loss,
                "eval_loss": result.eval_loss,
                "seconds": result.wall_seconds,
            },
        )

    return train


class GoldenGate:
    """Candidate vs production vs base on the alias's golden set, all served by vLLM."""

    def __init__(
        self,
        cfg: Config,
        client: OpenAI,
        load: Callable[[str, str], None],
        golden: dict[str, GoldenSet],
        reports_dir: Path,
        datasets_dir: Path,
        judge: GateJudge | None = None,
    ) -> None:
        r = cfg.retrain
        self.judge = judge
        self.client = client
        self.load = load  # serves a candidate where ``client`` reaches it
        self.golden = golden
        self.reports_dir = reports_dir
        self.datasets_dir = datasets_dir  # where each candidate's dataset (and live slice) is
        self.live_slice_format = cfg.teacher.format_pattern or None
        self.base_model = cfg.vllm.served_model_name
        self.max_tokens = r.gate_max_tokens
        self.concurrency = r.gate_concurrency
        self.policy = GatePolicy(
            margin=r.gate_margin,
            min_improvement=r.gate_min_improvement,
            drifted_categories=tuple(r.drifted_categories),
        )

    def __call__(self, candidate: Adapter, production: Route) -> GateOutcome:
        golden, policy = self._golden_and_policy(candidate)
        self.load(candidate.served_name, candidate.path)  # served to be measured
        report = run_gate(
            self.client,
            golden,
            candidate=candidate.served_name,
            production=production.served_name,  # the base model's name when no adapter serves
            base=self.base_model,
            policy=policy,
            max_tokens=self.max_tokens,
            concurrency=self.concurrency,
            retry=GATE_RETRY,
            judge=self.judge,
        )
        paths = write_report(report, self.reports_dir / candidate.id)
        judge = report.judge.get("status")
        return GateOutcome(
            passed=report.passed,
            reasons=[check.message for check in report.reasons]
            + ([f"judge {judge}"] if judge else []),
            summary={"summary": report.summary, "table": report.table, "judge": report.judge},
            golden_set=golden.ref,
            report_path=paths["html"],
        )

    def _golden_and_policy(self, candidate: Adapter) -> tuple[GoldenSet, GatePolicy]:
        """The alias's golden set, plus the live slice its dataset held out (which the candidate
        must then also improve on, as on a drifted category)."""
        golden = self.golden[candidate.model_alias]
        if candidate.dataset_id is None:
            return golden, self.policy
        dataset = load_dataset(self.datasets_dir / candidate.model_alias, candidate.dataset_id)
        live = dataset.read("live_slice")
        if not live:
            return golden, self.policy
        golden = with_live_slice(golden, live, dataset.id, self.live_slice_format)
        drifted = (*self.policy.drifted_categories, LIVE_SLICE)
        return golden, replace(self.policy, drifted_categories=drifted)
