"""vLLM's runtime LoRA API: load, unload and list adapters on a running server.

Needs vLLM started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (see
``driftloop.vllm_process``). Names are never reused for other weights: vLLM keys its prefix cache by
name, so a reloaded name could serve stale cache (the registry gives every version its own name).
A vLLM started with an API key (as driftloop starts it) refuses these calls without that key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class VLLMAdminError(RuntimeError):
    """vLLM refused or could not be reached; the message carries vLLM's own answer."""


class VLLMAdmin:
    def __init__(
        self, base_url: str, timeout_s: float = 120.0, *, api_key: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def loaded_adapters(self) -> dict[str, str]:
        """LoRA adapters vLLM serves now (models with a parent base model): name -> path."""
        body = self._call("GET", "/v1/models")
        return {m["id"]: m.get("root", "") for m in body.get("data", []) if m.get("parent")}

    def load(self, name: str, path: str) -> None:
        """Load the adapter at ``path`` under ``name``; the same pair already loaded is kept.

        A name that vLLM already serves from another path is refused: requests for it would get
        the other weights (and their prefix cache). That happens when a registry is reset while
        vLLM keeps running.
        """
        loaded = self.loaded_adapters()
        if name in loaded:
            if Path(loaded[name]).resolve() != Path(path).resolve():
                raise VLLMAdminError(
                    f"vLLM already serves {name!r} from {loaded[name]}, not {path}: unload it"
                    " first (a name must never be reused for other weights)"
                )
            return
        self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    def keep(self, name: str, path: str) -> None:
        """After a restart: on one vLLM, keeping a version served is loading it."""
        self.load(name, path)

    def unload(self, name: str) -> None:
        if name not in self.loaded_adapters():
            return
        self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> VLLMAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise VLLMAdminError(f"vLLM at {self.base_url} unreachable ({path}): {exc}") from exc
        if response.status_code >= 400:
            hint = " (wrong or missing vLLM API key, see vllm.api_key_env)"
            raise VLLMAdminError(
                f"vLLM refused {method} {path} ({response.status_code}): {response.text[:500]}"
                + (hint if response.status_code == 401 else "")
            )
        try:
            parsed = response.json()
        except ValueError:
            return {}  # load/unload answer with plain text
        return parsed if isinstance(parsed, dict) else {}
