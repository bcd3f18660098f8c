"""Scoring a served model on a golden set: every prompt asked once, answers scored per category.

``evaluate_model`` asks a served model (base, production adapter or candidate, by its served
name) every prompt of a golden set through the OpenAI API at temperature 0 and scores the
answers with the reference metrics of ``judges.reference`` plus ``format`` (the share of
answers matching the example's ``must_match``). ``retrain.gate.gate`` compares the scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

import openai

from judges.client import RetryPolicy, call_with_retries
from judges.reference import REFERENCE_METRICS
from retrain.gate.golden import GoldenExample, GoldenSet

FORMAT = "format"
OVERALL = "overall"
REFERENCE_NAMES = ("exact_match", "token_f1", "rouge_l")
METRICS = (*REFERENCE_NAMES, FORMAT)

# Extra per-example scores (a rubric judge, say): (example, answer) -> score in [0, 1] or None.
Scorer = Callable[[GoldenExample, str], float | None]


class GateError(RuntimeError):
    """The gate could not run (server error, unknown model, mismatched inputs); says which."""


@dataclass(frozen=True)
class ExampleResult:
    """One golden example answered by one model, with its scores."""

    id: str
    category: str
    prompt: str
    expected: str
    output: str
    finish_reason: str | None
    scores: dict[str, float | None]


@dataclass
class ModelScores:
    """A model's answers and per-category / overall metric means on one golden set."""

    model: str
    golden: str
    golden_sha256: str
    categories: dict[str, dict[str, float | None]]
    overall: dict[str, float | None]
    counts: dict[str, int]
    examples: list[ExampleResult]
    seconds: float

    def value(self, scope: str, metric: str) -> float | None:
        """The mean of ``metric`` over ``scope`` (a category or ``overall``); None if undefined."""
        table = self.overall if scope == OVERALL else self.categories.get(scope, {})
        return table.get(metric)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_model(
    client: openai.OpenAI,
    served_model: str,
    golden_set: GoldenSet,
    *,
    max_tokens: int = 64,
    concurrency: int = 8,
    scorers: Mapping[str, Scorer] | None = None,
    clock: Callable[[], float] = time.monotonic,
    retry: RetryPolicy | None = None,
) -> ModelScores:
    """Answer every golden prompt with ``served_model`` (temperature 0) and score the answers.

    With ``retry``, each call is retried under that policy (the SDK's own retries switched off);
    without, the client's own setting applies.
    """
    if max_tokens < 1 or concurrency < 1:
        raise ValueError(f"max_tokens ({max_tokens}) and concurrency ({concurrency}) must be >= 1")
    extra = dict(scorers or {})
    clash = sorted(set(extra) & set(METRICS))
    if clash:
        raise ValueError(f"scorer names {clash} clash with the built-in metrics {list(METRICS)}")
    if retry is not None:
        client = client.with_options(max_retries=0)
    started = clock()
    results: dict[str, ExampleResult] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gate") as pool:
        futures: dict[Future[ExampleResult], GoldenExample] = {
            pool.submit(_answer, client, served_model, ex, max_tokens, extra, retry): ex
            for ex in golden_set.examples
        }
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()  # fail fast: the first server error decides
        for future in done:
            error = future.exception()
            if error is not None:
                raise _gate_error(error, client, served_model, futures[future]) from error
            result = future.result()
            results[result.id] = result
    ordered = [results[ex.id] for ex in golden_set.examples]
    names = [*METRICS, *extra]
    categories = {
        cat: _means([r for r in ordered if r.category == cat], names)
        for cat in golden_set.categories
    }
    return ModelScores(
        model=served_model,
        golden=golden_set.ref,
        golden_sha256=golden_set.sha256,
        categories=categories,
        overall=_means(ordered, names),
        counts={cat: len(golden_set.by_category(cat)) for cat in golden_set.categories},
        examples=ordered,
        seconds=round(clock() - started, 3),
    )


def _answer(
    client: openai.OpenAI,
    model: str,
    example: GoldenExample,
    max_tokens: int,
    extra: Mapping[str, Scorer],
    retry: RetryPolicy | None,
) -> ExampleResult:
    def create() -> Any:
        return client.chat.completions.create(
            model=model,
            messages=[dict(m) for m in example.messages],  # type: ignore[misc]
            temperature=0,
            max_tokens=max_tokens,
        )

    if retry is None:
        response = create()
    else:
        response = call_with_retries(create, retry, base_url=str(client.base_url))
    if not response.choices:
        raise GateError(f"model {model!r} returned no choices for golden example {example.id}")
    choice = response.choices[0]
    output = choice.message.content or ""
    scores: dict[str, float | None] = {
        name: REFERENCE_METRICS[name](output, example.expected) for name in REFERENCE_NAMES
    }
    scores[FORMAT] = (
        None if example.must_match is None else float(example.must_match.search(output) is not None)
    )
    for name, scorer in extra.items():
        scores[name] = scorer(example, output)
    return ExampleResult(
        example.id,
        example.category,
        example.prompt,
        example.expected,
        output,
        choice.finish_reason,
        scores,
    )


def _gate_error(
    error: BaseException, client: openai.OpenAI, model: str, example: GoldenExample
) -> GateError:
    where = f"{client.base_url}"
    if isinstance(error, GateError):
        return error
    if isinstance(error, openai.NotFoundError):
        return GateError(
            f"model {model!r} is not served at {where} (HTTP 404 on golden example "
            f"{example.id}: {_message(error)}); is the adapter loaded under that name?"
        )
    if isinstance(error, openai.APIStatusError):
        return GateError(
            f"model {model!r} at {where} answered HTTP {error.status_code} on golden example "
            f"{example.id}: {_message(error)}"
        )
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return GateError(f"cannot reach {where} to evaluate {model!r}: {error}")
    return GateError(f"evaluating {model!r} on golden example {example.id} failed: {error!r}")


def _message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return error.message


def _means(results: Sequence[ExampleResult], names: Sequence[str]) -> dict[str, float | None]:
    """Per metric, the mean over the examples where it is defined (None where none is)."""
    out: dict[str, float | None] = {}
    for name in names:
        values = [v for r in results if (v := r.scores.get(name)) is not None]
        out[name] = round(sum(values) / len(values), 6) if values else None
    return out
