"""Post-deploy guard: roll a fresh adapter back on its own when its live traffic goes bad.

For ``watch_s`` after a deploy, the guard looks at the traffic the new version actually served
(captured rows whose ``served_model`` is its versioned name): the share of failed requests and
the judges' mean score. Either one past its bar, on enough samples, rolls the alias back to the
version before (``Deployer.rollback`` with actor ``loop``, counted as an automatic rollback).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retrain.serving.deploy import Deployer, Route


@dataclass(frozen=True)
class GuardSettings:
    watch_s: float = 3600.0
    min_samples: int = 20
    max_error_rate: float = 0.05
    min_judge_score: float | None = 2.5


class PostDeployGuard:
    def __init__(
        self,
        deployer: Deployer,
        settings: GuardSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.deployer = deployer
        self.store = deployer.store
        self.settings = settings
        self.clock = clock

    def check(self, alias: str) -> Route | None:
        """Roll back if the production version's live traffic is bad; return the new route."""
        route = self.deployer.current(alias)
        if route.adapter is None:
            return None
        since = self._deployed_at(alias, route.served_name)
        if since is None or self.clock() - since > timedelta(seconds=self.settings.watch_s):
            return None
        why = self._verdict(route.served_name, since)
        if why is None:
            return None
        return self.deployer.rollback(alias, actor="loop", reason=f"post-deploy guard: {why}")

    def _verdict(self, served: str, since: datetime) -> str | None:
        s = self.settings
        [(n, failed)] = self.store.query(
            "SELECT count(*), count(*) FILTER (WHERE status_code >= 500 OR error IS NOT NULL)"
            " FROM requests WHERE served_model = ? AND started_at >= ?",
            [served, since],
        )
        if n >= s.min_samples and failed / n > s.max_error_rate:
            return f"{failed}/{n} requests to {served} failed (> {s.max_error_rate:.0%})"
        if s.min_judge_score is None:
            return None
        [(mean, judged)] = self.store.query(
            "SELECT avg(j.score), count(*) FROM judgments j"
            " JOIN requests r ON r.request_id = j.request_id"
            " WHERE r.served_model = ? AND r.started_at >= ? AND j.outcome = 'scored'",
            [served, since],
        )
        if judged >= s.min_samples and mean is not None and mean < s.min_judge_score:
            return f"judge mean {mean:.2f} over {judged} answers of {served} < {s.min_judge_score}"
        return None

    def _deployed_at(self, alias: str, served: str) -> datetime | None:
        rows = self.store.query(
            "SELECT max(occurred_at) FROM deployments WHERE model_alias = ? AND served_name = ?"
            " AND state = 'switched'",
            [alias, served],
        )
        return rows[0][0] if rows else None
