"""Upload the generated dashboards to a running Grafana through its HTTP API (grafana-client).

Provisioning from files (``dashboards/provisioning``) is the default; a push is for a Grafana you
do not control the files of. Dashboards keep their pinned uids, go into one folder, and overwrite
what is there, so pushing again is idempotent.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.build import DATASOURCE_UID


class GrafanaTarget(Protocol):
    """Where and how to push (``driftloop.config.GrafanaConfig``); nothing here imports driftloop."""

    @property
    def url(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def datasource_uid(self) -> str: ...
    @property
    def token_env(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...


class GrafanaPushError(RuntimeError):
    """The push could not be done; the message says which step and why."""


@dataclass(frozen=True)
class Pushed:
    uid: str
    title: str
    url: str
    version: int


def grafana_token(cfg: GrafanaTarget, environ: dict[str, str] | None = None) -> str:
    """The service account token from the env var named by ``grafana.token_env``."""
    env = os.environ if environ is None else environ
    token = env.get(cfg.token_env, "")
    if not token:
        raise GrafanaPushError(
            f"no Grafana token: set the environment variable {cfg.token_env}"
            " (grafana.token_env) to a service account token with the Editor role"
        )
    return token


def with_datasource(model: dict[str, Any], uid: str) -> dict[str, Any]:
    """A copy of a dashboard whose Prometheus references point at data source ``uid``."""
    model = copy.deepcopy(model)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("datasource")
            if isinstance(ref, dict) and ref.get("uid") == DATASOURCE_UID:
                ref["uid"] = uid
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(model)
    return model


def push_dashboards(
    cfg: GrafanaTarget, dashboards: dict[str, dict[str, Any]], token: str
) -> list[Pushed]:
    """Create the folder if missing, then create or overwrite every dashboard in it."""
    if not cfg.url:
        raise GrafanaPushError("grafana.url is empty: set it to the Grafana base URL to push")
    api = GrafanaApi.from_url(cfg.url, credential=token, timeout=cfg.timeout_s)
    step = f"reading folder {cfg.folder!r}"
    try:
        try:
            api.folder.get_folder(cfg.folder)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            step = f"creating folder {cfg.folder!r}"
            api.folder.create_folder(cfg.folder, uid=cfg.folder)
        pushed = []
        for model in dashboards.values():
            step = f"uploading dashboard {model['uid']!r}"
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": with_datasource(model, cfg.datasource_uid),
                    "folderUid": cfg.folder,
                    "overwrite": True,
                    "message": "driftloop dashboards push",
                }
            )
            pushed.append(
                Pushed(
                    uid=str(answer.get("uid", model["uid"])),
                    title=model["title"],
                    url=cfg.url + str(answer.get("url", "")),
                    version=int(answer.get("version", 0)),
                )
            )
    except GrafanaException as exc:
        raise GrafanaPushError(
            f"Grafana at {cfg.url} refused {step}: HTTP {exc.status_code}: {exc.message}"
        ) from None
    except requests.RequestException as exc:
        raise GrafanaPushError(f"Grafana at {cfg.url} unreachable while {step}: {exc}") from None
    return pushed
