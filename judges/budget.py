"""A daily (UTC) token and request budget per judge; once spent, judging stops until midnight.

Spending is read back from ``judgments`` when the day starts, so a restart does not refill the
budget. Tokens are only known after a call, so the token budget can be overrun by at most the
calls in flight when it runs out (``concurrency`` x the largest call).

>>> from datetime import UTC, datetime
>>> budget = DailyBudget(100, 2, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
>>> budget.reserve(), budget.reserve(), budget.reserve()
(True, True, False)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time

from monitor.store import Store

Spent = tuple[int, int]  # (tokens, requests) spent so far on a day


class DailyBudget:
    """Counts tokens and requests spent today; ``reserve`` says whether one more call may start."""

    def __init__(
        self,
        token_limit: int,
        request_limit: int,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        spent_on: Callable[[date], Spent] = lambda day: (0, 0),
    ) -> None:
        if token_limit < 0 or request_limit < 0:
            raise ValueError("budgets must be >= 0")
        self.token_limit = token_limit
        self.request_limit = request_limit
        self._clock = clock
        self._spent_on = spent_on  # what was already spent on a day (from the store)
        self._lock = threading.Lock()
        self._day: date | None = None
        self.tokens = 0
        self.requests = 0

    def _roll(self) -> None:
        today = self._clock().astimezone(UTC).date()
        if today != self._day:
            self._day = today
            self.tokens, self.requests = self._spent_on(today)

    def reserve(self) -> bool:
        """Take one request from today's budget; False (and nothing taken) when it is spent."""
        with self._lock:
            self._roll()
            if self.tokens >= self.token_limit or self.requests >= self.request_limit:
                return False
            self.requests += 1
            return True

    def spend(self, tokens: int, extra_requests: int = 0) -> None:
        """Record tokens a call used, and retries beyond its reserved request."""
        with self._lock:
            self._roll()
            self.tokens += tokens
            self.requests += extra_requests

    def exhausted(self) -> bool:
        with self._lock:
            self._roll()
            return self.tokens >= self.token_limit or self.requests >= self.request_limit

    def remaining_tokens(self) -> int:
        with self._lock:
            self._roll()
            return max(0, self.token_limit - self.tokens)


def spent_in_store(store: Store, judge: str) -> Callable[[date], Spent]:
    """Tokens and HTTP attempts a judge recorded in ``judgments`` on a UTC day."""

    def spent(day: date) -> Spent:
        start = datetime.combine(day, time.min, tzinfo=UTC)
        row = store.query(
            "SELECT coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0),"
            " coalesce(sum(coalesce(attempts, 0)), 0)"
            " FROM judgments WHERE judge = ? AND created_at >= ?",
            [judge, start],
        )[0]
        return int(row[0]), int(row[1])

    return spent
