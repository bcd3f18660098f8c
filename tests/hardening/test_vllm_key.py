"""vLLM's runtime-LoRA admin answers only to driftloop: the launched vLLM wants a key only it holds.

Run against the session's real vLLM, started with a key as ``serve`` starts it. Clients of the
sidecar never need (or see) that key; they cannot reach the admin paths through the sidecar.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from driftloop.api.app import create_api
from driftloop.upstream import open_upstream, upstream_api_key
from judges.client import Endpoint
from monitor.vllm_admin import VLLMAdmin, VLLMAdminError
from tests.conftest import CACHE_DIR, SERVED_NAME, make_config
from tests.servers import serve_in_thread

ADMIN_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
QUESTION = [{"role": "user", "content": "Name a colour."}]


def test_the_key_comes_from_the_env_var_the_config_names(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, vllm={"api_key_env": "MY_VLLM_KEY"})
    assert upstream_api_key(cfg, {"MY_VLLM_KEY": "k" * 40}) == "k" * 40
    assert upstream_api_key(cfg, {"DRIFTLOOP_VLLM_API_KEY": "other"}) is None
    assert upstream_api_key(cfg, {"MY_VLLM_KEY": ""}) is None
    # The message names the variable and the config key, never the value.
    with pytest.raises(ValueError, match=r"^MY_VLLM_KEY \(named by vllm.api_key_env\)") as caught:
        upstream_api_key(cfg, {"MY_VLLM_KEY": "sécret-value"})
    assert "sécret" not in str(caught.value)


def test_an_external_upstream_gets_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(
        tmp_path, vllm={"launch": False}, sidecar={"upstream_url": "http://127.0.0.1:9"}
    )
    monkeypatch.delenv("DRIFTLOOP_VLLM_API_KEY", raising=False)
    with open_upstream(cfg) as upstream:
        assert upstream == ("http://127.0.0.1:9", None)  # clients' own headers pass through
    monkeypatch.setenv("DRIFTLOOP_VLLM_API_KEY", "external-key-0123456789")
    with open_upstream(cfg) as upstream:
        assert upstream == ("http://127.0.0.1:9", "external-key-0123456789")
    monkeypatch.setenv("DRIFTLOOP_VLLM_API_KEY", "two words")
    with pytest.raises(SystemExit, match="DRIFTLOOP_VLLM_API_KEY"), open_upstream(cfg):
        pass


def test_a_judge_endpoint_keeps_its_key_out_of_repr() -> None:
    endpoint = Endpoint("http://127.0.0.1:9/v1", "m", api_key_value="held-in-memory")
    assert endpoint.api_key({}) == "held-in-memory"
    assert "held-in-memory" not in repr(endpoint)


@pytest.mark.vllm
@pytest.mark.slow
def test_the_launched_vllm_refuses_its_admin_without_the_key(vllm_server) -> None:
    assert httpx.get(vllm_server.base_url + "/health", timeout=10).status_code == 200
    wrong = {"Authorization": "Bearer not-the-key"}
    for path in ADMIN_PATHS:
        body = {"lora_name": "intruder", "lora_path": str(CACHE_DIR)}
        for headers in ({}, wrong):
            response = httpx.post(
                vllm_server.base_url + path, json=body, headers=headers, timeout=30
            )
            assert response.status_code == 401, (path, headers, response.text)
    # Inference is guarded the same way: the sidecar, not the client, holds the key.
    assert httpx.get(vllm_server.base_url + "/v1/models", timeout=30).status_code == 401
    with (
        VLLMAdmin(vllm_server.base_url) as anonymous,
        pytest.raises(VLLMAdminError, match=r"\(401\).*vllm.api_key_env"),
    ):
        anonymous.loaded_adapters()


@pytest.mark.vllm
@pytest.mark.slow
def test_driftloops_deployer_with_the_key_loads_and_unloads(vllm_server, loras) -> None:
    admin = VLLMAdmin(vllm_server.base_url, api_key=vllm_server.api_key)
    try:
        admin.load("hardening-v1", str(loras[0]))
        assert "hardening-v1" in admin.loaded_adapters()
        client = openai.OpenAI(
            base_url=vllm_server.base_url + "/v1", api_key=vllm_server.api_key, max_retries=0
        )
        reply = client.chat.completions.create(
            model="hardening-v1", messages=QUESTION, max_tokens=4, temperature=0
        )
        assert reply.model == "hardening-v1"
        client.close()
        admin.unload("hardening-v1")
        assert "hardening-v1" not in admin.loaded_adapters()
    finally:
        admin.unload("hardening-v1")
        admin.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_through_the_sidecar_any_client_key_works_and_admin_is_refused(
    vllm_server, start_sidecar, loras
) -> None:
    sidecar = start_sidecar(vllm_server.base_url, upstream_api_key=vllm_server.api_key)
    client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="any-client-key", max_retries=0)
    reply = client.chat.completions.create(
        model=SERVED_NAME,
        messages=QUESTION,
        max_tokens=4,
        temperature=0,
        extra_headers={"x-driftloop-capture": "force"},
    )
    assert reply.choices[0].message.content
    client.close()
    # Neither the client's token nor vLLM's own key opens the admin through the sidecar.
    for token in ("any-client-key", vllm_server.api_key):
        for path in ADMIN_PATHS:
            response = httpx.post(
                sidecar.url + path,
                json={"lora_name": "via-sidecar", "lora_path": str(loras[0])},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert response.status_code in (403, 404), (path, response.status_code, response.text)
    with VLLMAdmin(vllm_server.base_url, api_key=vllm_server.api_key) as admin:
        assert "via-sidecar" not in admin.loaded_adapters()


@pytest.mark.vllm
@pytest.mark.slow
def test_the_key_appears_in_no_log_row_page_or_command_line(vllm_server, start_sidecar) -> None:
    key = vllm_server.api_key
    sidecar = start_sidecar(vllm_server.base_url, upstream_api_key=key)
    client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="client-key", max_retries=0)
    client.chat.completions.create(
        model=SERVED_NAME,
        messages=QUESTION,
        max_tokens=4,
        extra_headers={"x-driftloop-capture": "force"},
    )
    client.close()
    sidecar.flush()
    rows = sidecar.rows("SELECT * FROM requests")
    assert rows and not any(key in str(value) for row in rows for value in row)
    assert not any("client-key" in str(value) for row in rows for value in row)
    pages = [httpx.get(sidecar.url + page, timeout=10).text for page in ("/healthz", "/metrics")]
    token = "t" * 32
    api = create_api(token, sidecar.parts.store, sidecar.parts.sidecar, sidecar.parts.aliases)
    with serve_in_thread(api) as api_url:
        auth = {"Authorization": f"Bearer {token}"}
        pages += [httpx.get(api_url + "/api/v1/status", headers=auth, timeout=10).text]
    assert all(key not in page for page in pages)
    assert key not in vllm_server.log_path.read_text(errors="replace")
    # Passed in the environment (readable by its owner only), not on the command line (by all).
    cmdline = Path(f"/proc/{vllm_server.pid}/cmdline").read_bytes().decode(errors="replace")
    assert key not in cmdline


@pytest.fixture(scope="module")
def loras(smollm2_dir, tmp_path_factory):
    from tests.loras import random_lora

    return [random_lora(smollm2_dir, tmp_path_factory.mktemp("loras") / "lora1", seed=1)]
