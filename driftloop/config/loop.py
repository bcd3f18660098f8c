"""The loop's sections: drift evaluation, the judges, the teacher, and retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from driftloop.config.section import Section


class DriftConfig(Section):
    enabled: bool = Field(
        True, description="Embed captured traffic and evaluate drift on a schedule."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between drift evaluations.")
    embed_interval_s: float = Field(
        5.0, gt=0, description="Seconds between passes that embed newly captured traffic."
    )
    embed_batch: int = Field(512, ge=1, description="Exchanges embedded per pass at most.")
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx", description="Embedding runtime: torch, onnx or onnx-int8 (see README benchmarks)."
    )
    embedding_threads: int = Field(1, ge=1, description="Threads the embedding worker may use.")
    reference_size: int = Field(
        2000, ge=10, description="Exchanges in a reference window (from the reference start)."
    )
    window_size: int = Field(
        2000, ge=10, description="Latest exchanges in the current window (sliding)."
    )
    min_samples: int = Field(
        200, ge=10, description="Both windows need at least this many samples to trip."
    )
    alpha: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Family-wise false-alarm rate of each alias's combined drift decision.",
    )
    sessions: bool = Field(
        True,
        description="Permute whole sessions (requests.session_key) in every drift null; off: rows are independent.",
    )


def _default_rules() -> dict[str, dict[str, Any]]:
    return {"refusal": {}, "empty": {}}


class JudgesConfig(Section):
    enabled: bool = Field(
        True, description="Judge a sample of captured traffic on a schedule (LLM and rule judges)."
    )
    base_url: str = Field(
        "",
        description="OpenAI-compatible base URL of the judge model (ending in /v1); empty means the sidecar's upstream vLLM.",
    )
    model: str = Field(
        "", description="Judge model name at that endpoint; empty means vllm.served_model_name."
    )
    api_key_env: str = Field(
        "DRIFTLOOP_JUDGE_API_KEY",
        description="Environment variable holding the judge endpoint's API key (unset: none sent).",
    )
    rubric: str = Field(
        "helpfulness",
        description="Rubric of the LLM judge: a name in judges/rubrics/ or a path to a .toml file.",
    )
    structured_output: bool = Field(
        False,
        description="Ask the endpoint to enforce the verdict's JSON schema (response_format json_schema).",
    )
    max_tokens: int = Field(128, ge=8, description="Longest verdict the judge model may write.")
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=_default_rules,
        description="Rule judges to run on the same sample: kind -> parameters (refusal, empty, json_valid, regex, length).",
    )
    sample_rate: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of captured exchanges judged, per model alias."
    )
    sample_rates: dict[str, float] = Field(
        default_factory=dict, description="Per model alias judging share, overriding sample_rate."
    )
    per_alias: int = Field(
        50, ge=1, description="Exchanges judged per model alias and pass, at most (newest first)."
    )
    concurrency: int = Field(4, ge=1, description="Judge calls in flight at once.")
    timeout_s: float = Field(30.0, gt=0, description="Time allowed for one judge call attempt.")
    max_retries: int = Field(
        3,
        ge=0,
        description="Retries of a judge call after a 429, 5xx, timeout or refused connection.",
    )
    backoff_s: float = Field(
        1.0, ge=0, description="Delay before the first retry; doubles per retry (with jitter)."
    )
    daily_token_budget: int = Field(
        200_000,
        ge=0,
        description="Judge tokens (prompt + completion) per UTC day; then judging stops.",
    )
    daily_request_budget: int = Field(
        2_000, ge=0, description="Judge HTTP requests per UTC day; then judging stops."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between judging passes.")
    window_size: int = Field(
        200, ge=1, description="Latest scored judgments per alias behind the score-mean gauge."
    )
    calibration_set: Path | None = Field(
        None,
        description="Labelled JSONL set for `driftloop judges calibrate`; empty means the shipped trivia set.",
    )
    calibration_min_kappa: float = Field(
        0.4, ge=-1, le=1, description="A judge whose weighted kappa is below this is flagged."
    )
    calibration_min_parsed: float = Field(
        0.9, ge=0, le=1, description="A judge that scores fewer items than this share is flagged."
    )
    anchor_set: Path | None = Field(
        None, description="Anchor JSONL set re-judged for judge drift; empty means the shipped one."
    )
    anchor_interval_s: float = Field(
        3600.0, gt=0, description="Seconds between re-judging the anchor set."
    )
    anchor_max_shift: float = Field(
        0.5,
        gt=0,
        description="A shift of the anchor mean score this large is reported as judge drift.",
    )

    @field_validator("base_url")
    @classmethod
    def _judge_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or start with http:// or https://")
        return value.rstrip("/")

    @field_validator("sample_rates")
    @classmethod
    def _judge_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for model, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {model!r} is {rate}, must be within [0, 1]")
        return value

    @field_validator("rubric")
    @classmethod
    def _rubric_loads(cls, value: str) -> str:
        from judges.rubric import load_rubric

        load_rubric(value)  # raises RubricError (a ValueError) naming the file and the field
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from judges.plugins import build_rule_judge

        for kind, params in value.items():
            build_rule_judge(kind, params)  # raises ValueError naming the kind and parameter
        return value


class TeacherConfig(Section):
    enabled: bool = Field(
        False,
        description="On a drift trigger, label the drifted prompts with a teacher model (source `teacher`).",
    )
    base_url: str = Field(
        "",
        description="OpenAI-compatible base URL of the teacher (ending in /v1); empty means the upstream vLLM (context distillation).",
    )
    model: str = Field(
        "", description="Teacher model name at that endpoint; empty means vllm.served_model_name."
    )
    api_key_env: str = Field(
        "DRIFTLOOP_TEACHER_API_KEY",
        description="Environment variable holding the teacher endpoint's API key (unset: none sent).",
    )
    system_prompt: str = Field(
        "", description="The house policy the teacher answers under (required when enabled)."
    )
    examples: Path | None = Field(
        None,
        description='Few-shot JSONL for the teacher, one {"prompt": ..., "answer": ...} per line, shown in order.',
    )
    format_pattern: str = Field(
        "",
        description="Regex every accepted teacher answer must match (the house format); also the live slice's format check.",
    )
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=_default_rules,
        description="Rule judges a teacher answer must pass: kind -> parameters (refusal, empty, json_valid, regex, length).",
    )
    judge: bool = Field(
        False,
        description="Also require the configured LLM judge (judges.*) to score each answer >= teacher.judge_min_score; asked only while its calibration on record meets judges.calibration_min_kappa / _min_parsed.",
    )
    judge_min_score: float = Field(
        4.0, ge=1, le=5, description="Lowest LLM-judge score (1-5) a teacher answer may keep."
    )
    max_tokens: int = Field(128, ge=1, description="Longest answer the teacher may write.")
    concurrency: int = Field(4, ge=1, description="Teacher calls in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Time allowed for one teacher call attempt.")
    max_retries: int = Field(
        2,
        ge=0,
        description="Retries of a teacher call after a 429, 5xx, timeout or refused connection.",
    )
    backoff_s: float = Field(
        1.0, ge=0, description="Delay before the first retry; doubles per retry (with jitter)."
    )
    daily_token_budget: int = Field(
        500_000,
        ge=0,
        description="Teacher tokens (prompt + completion) per UTC day; then no calls.",
    )
    daily_request_budget: int = Field(
        5_000, ge=0, description="Teacher HTTP requests per UTC day; then no calls."
    )
    max_prompts: int = Field(
        200,
        ge=1,
        description="Drifted prompts (de-duplicated) the teacher labels per run, at most.",
    )
    live_slice_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of accepted teacher labels held out of training as the gate's live slice.",
    )

    @field_validator("base_url")
    @classmethod
    def _teacher_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or start with http:// or https://")
        return value.rstrip("/")

    @field_validator("format_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
        return value

    @field_validator("examples")
    @classmethod
    def _examples_load(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_few_shot(value)  # raises ValueError naming the file and line
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from judges.plugins import build_rule_judge

        for kind, params in value.items():
            build_rule_judge(kind, params)
        return value

    @model_validator(mode="after")
    def _policy_stated(self) -> TeacherConfig:
        if self.enabled and not self.system_prompt.strip():
            raise ValueError(
                "teacher.system_prompt is empty: a teacher needs the house policy it answers under"
            )
        return self


def read_few_shot(path: Path) -> tuple[tuple[str, str], ...]:
    """The teacher's few-shot pairs from a JSONL file; errors name the file and line."""
    import json

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("prompt"), str)
            and isinstance(row.get("answer"), str)
            and row["prompt"].strip()
            and row["answer"].strip()
        ):
            raise ValueError(f'{path}:{number}: expected {{"prompt": text, "answer": text}}')
        pairs.append((row["prompt"], row["answer"]))
    return tuple(pairs)


TrainingMethod = Literal["sft", "dpo"]


def _sft_everywhere() -> dict[str, TrainingMethod]:
    return {"*": "sft"}


class RetrainConfig(Section):
    enabled: bool = Field(
        True, description="Evaluate retrain triggers on a schedule and run the loop when they trip."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between trigger evaluations.")
    drift_signals: list[str] = Field(
        default_factory=lambda: ["combined"],
        description="Drift signals whose tripping counts toward the drift trigger (combined: the alias's decision).",
    )
    drift_consecutive: int = Field(
        3, ge=1, description="A drift signal must trip in this many consecutive evaluations."
    )
    quality_bar: float | None = Field(
        3.0, description="Retrain when the judges' mean score (1-5) falls below this; null: off."
    )
    quality_min_samples: int = Field(
        20, ge=1, description="Judgments needed in the window before the quality trigger may trip."
    )
    volume_examples: int | None = Field(
        200, ge=1, description="Retrain after this many new feedback examples; null: off."
    )
    schedule_s: float | None = Field(
        None, gt=0, description="Retrain at least this often (seconds); null: no schedule."
    )
    cooldown_s: float = Field(
        3600.0, ge=0, description="Seconds after a run starts before another may be triggered."
    )
    min_examples: int = Field(
        20, ge=1, description="Training examples needed before a run may start."
    )
    judged_min_score: float = Field(
        4.0, ge=1, le=5, description="Captured answers judged at least this good become examples."
    )
    replay_share: float = Field(
        0.2, ge=0, lt=1, description="Least share of replayed earlier data in a training split."
    )
    seed_dataset: Path | None = Field(
        None,
        description="JSONL of chat examples the production model was tuned on: the first replay pool.",
    )
    base_model_dir: Path | None = Field(
        None, description="Base model the adapters train on; empty means the served model's folder."
    )
    training_methods: dict[str, TrainingMethod] = Field(
        default_factory=_sft_everywhere,
        description="Model alias (or *) -> how it trains: sft (on the wanted answers) or dpo (TRL's"
        " DPOTrainer on the preference pairs, reference = the production model).",
    )
    dpo_beta: float = Field(
        0.1, gt=0, le=10, description="DPO's beta: how far a dpo run may move from its reference."
    )
    lora_rank: int = Field(8, ge=1, description="LoRA rank of new adapters.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha of new adapters.")
    learning_rate: float = Field(2e-4, gt=0, description="Learning rate of a training run.")
    max_learning_rate: float = Field(
        1e-3, gt=0, description="Cap on learning_rate (a higher value is refused)."
    )
    max_steps: int = Field(60, ge=1, description="Optimizer steps of a training run.")
    max_steps_cap: int = Field(2000, ge=1, description="Cap on max_steps.")
    batch_size: int = Field(4, ge=1, description="Examples per optimizer step.")
    train_time_limit_s: float = Field(
        1800.0, gt=0, description="A training subprocess running longer is killed."
    )
    train_threads: int = Field(1, ge=1, description="CPU threads the trainer may use.")
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where training runs: a local subprocess, or a Ray task (inputs and outputs"
        " through fleet.object_store_url).",
    )
    ray_address: str = Field(
        "", description="The Ray cluster to train on (host:port of its head node)."
    )
    ray_num_cpus: float = Field(1.0, ge=0, description="CPUs the Ray training task asks for.")
    ray_num_gpus: float = Field(0.0, ge=0, description="GPUs the Ray training task asks for.")
    price_per_cpu_hour: float = Field(
        0.0, ge=0, description="Price of one CPU for an hour, for each run's cost (0: unpriced)."
    )
    price_per_gpu_hour: float = Field(
        0.0, ge=0, description="Price of one GPU for an hour (a 4090 rents for about $0.18)."
    )
    ray_resources: dict[str, float] = Field(
        default_factory=dict,
        description='Custom Ray resources that pin the trainer to a node, e.g. {"trainer": 1}.',
    )
    golden_sets: dict[str, str] = Field(
        default_factory=lambda: {"*": "helpdesk"},
        description="Model alias (or *) -> golden set name[@version] the gate runs.",
    )
    gate_margin: float = Field(
        0.05, ge=0, lt=1, description="How far below production a candidate may score and pass."
    )
    gate_min_improvement: float = Field(
        0.10, ge=0, le=1, description="How much better the candidate must be on drifted categories."
    )
    drifted_categories: list[str] = Field(
        default_factory=list,
        description="Golden-set categories that must improve; empty: the overall score must.",
    )
    gate_max_tokens: int = Field(64, ge=1, description="Tokens per golden-set answer.")
    gate_judge: bool = Field(
        True,
        description="Ask the configured LLM judge (pairwise, both orders) in the gate; it counts only when its recorded calibration meets judges.calibration_min_kappa and judges.calibration_min_parsed.",
    )
    gate_concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="Golden-set requests the gate keeps in flight; fewer leave more of a shared"
        " vLLM to serving (see benchmarks/serving_during_loop.py).",
    )
    auto_deploy: bool = Field(
        True, description="Ship adapters that pass the gate; false leaves them in staging."
    )
    keep_versions: int = Field(
        3, ge=1, description="Earlier production versions kept loaded in vLLM for rollback."
    )
    rollback_watch_s: float = Field(
        3600.0, ge=0, description="After a deploy, watch the new version's traffic this long."
    )
    rollback_min_samples: int = Field(
        20, ge=1, description="Requests (or judgments) needed before the guard may roll back."
    )
    rollback_max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Roll back when a larger share of its requests fail."
    )
    rollback_min_judge_score: float | None = Field(
        2.5, description="Roll back when the judges' mean on its answers is below this; null: off."
    )
    canary_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of an alias's conversations a new version gets first; 0: it takes all"
        " traffic at once.",
    )
    canary_min_requests: int = Field(
        100, ge=1, description="Requests on each side of a canary before it may be promoted."
    )
    canary_alpha: float = Field(
        0.01, gt=0, lt=1, description="Significance of the canary's checks, all together."
    )
    canary_max_duration_s: float = Field(
        86400.0, gt=0, description="A canary without enough traffic by then is rolled back."
    )
