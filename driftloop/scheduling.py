"""Background jobs of the service on one APScheduler: embed, drift, judges, anchors, the retrain loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    run: Callable[[], object]
    every_s: float


@dataclass
class Jobs:
    """An APScheduler that runs each job on its interval, never two runs of one job at once."""

    jobs: list[Job]
    _scheduler: BackgroundScheduler = field(
        default_factory=lambda: BackgroundScheduler(daemon=True)
    )

    def add(self, *jobs: Job) -> None:
        """More jobs, before ``start`` (the service wires judges and the loop after drift)."""
        if self._scheduler.running:
            raise RuntimeError("jobs are added before the scheduler starts")
        self.jobs.extend(jobs)

    def start(self) -> None:
        for job in self.jobs:
            self._scheduler.add_job(
                _logged(job),
                "interval",
                seconds=job.every_s,
                id=job.name,
                max_instances=1,
                coalesce=True,  # a slow run does not queue a backlog of runs behind it
            )
        self._scheduler.start()

    def run_now(self, name: str) -> object:
        """Run one job in the caller's thread (tests, the demo, the control API)."""
        for job in self.jobs:
            if job.name == name:
                return job.run()
        raise KeyError(f"no job named {name!r}; jobs: {[j.name for j in self.jobs]}")

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)


def _logged(job: Job) -> Callable[[], None]:
    def run() -> None:
        try:
            job.run()
        except Exception:  # a failed run is logged and retried on the next tick
            log.exception("job %s failed", job.name)

    return run
