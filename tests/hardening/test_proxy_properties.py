"""Property-based tests of request parsing and of the alias and capture decision.

Against the real sidecar (the stub echoes what it received): for arbitrary JSON bodies, models,
stream flags, stream options and headers, the sidecar never answers an error of its own, rewrites
exactly what the configuration says, decides capture as the configuration says, and forwards the
body byte for byte when nothing needs rewriting. The path and URL helpers get the same treatment.
"""

from __future__ import annotations

import ipaddress
import json
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.upstream_stub import running_stub
from monitor.paths import DEFAULT_FORWARD_PATHS, PathPolicy, normalise_path
from monitor.sampling import TrustedNetworks
from monitor.urls import redact_url, split_credentials

ALIASES = {"support": "served-v1", "billing": "served-b2"}
CAPTURED_MODELS = {"support", "hot"}  # sample_rates 1.0; everything else 0.0
ABSENT = object()

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),  # includes lone surrogates, which the stdlib writes as \ud8xx escapes
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
models = st.one_of(
    st.sampled_from([*ALIASES, *ALIASES.values(), "hot", "cold"]),
    st.text(max_size=12),
    st.integers(),
    st.none(),
    st.just(ABSENT),
)
streams = st.sampled_from([True, False, "true", 1, None, ABSENT])
stream_options = st.one_of(
    st.just(ABSENT),
    st.none(),
    st.fixed_dictionaries({}, optional={"include_usage": st.sampled_from([True, False, 1, "x"])}),
    st.sampled_from(["yes", 3]),
    st.lists(st.integers(), max_size=2),
)
capture_headers = st.one_of(
    st.none(), st.sampled_from(["force", "skip", "FORCE", "Skip"]), st.text(string.ascii_letters)
)
header_names = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12).map(
    lambda name: "x-p-" + name
)
header_values = st.text(string.printable.strip() + " ", max_size=30).map(str.strip)


@st.composite
def request_bodies(draw: st.DrawFn) -> tuple[bytes, Any]:
    """(bytes sent, the object they encode, or ABSENT when they are not a JSON object)."""
    if draw(st.integers(0, 9)) == 0:  # sometimes not an object at all
        raw = draw(
            st.one_of(st.binary(max_size=40), json_value.map(lambda v: json.dumps(v).encode()))
        )
        return raw, ABSENT
    payload: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), json_value, max_size=4))
    for key, strategy in (
        ("model", models),
        ("stream", streams),
        ("stream_options", stream_options),
    ):
        value = draw(strategy)
        if value is not ABSENT:
            payload[key] = value
    spaced = draw(st.booleans())
    raw = json.dumps(payload, separators=(", ", ": ") if spaced else (",", ":")).encode()
    return raw, payload


def expected_decision(payload: dict[str, Any], header: str | None) -> str:
    if header is not None and header.strip().lower() in ("force", "skip"):
        return "forced" if header.strip().lower() == "force" else "skipped"
    model = payload.get("model")
    return "sampled_in" if isinstance(model, str) and model in CAPTURED_MODELS else "sampled_out"


def canonical(value: Any) -> str:
    """Equality that treats NaN as equal to itself (json writes both the same)."""
    return json.dumps(value)


@pytest.fixture(scope="module")
def stub_url():
    with running_stub() as port:
        yield f"http://127.0.0.1:{port}"


def test_alias_rewrite_and_capture_decision_follow_the_config(start_sidecar, stub_url):
    sidecar = start_sidecar(
        stub_url,
        aliases=ALIASES,
        capture={"sample_rate": 0.0, "sample_rates": dict.fromkeys(CAPTURED_MODELS, 1.0)},
    )
    http = httpx.Client(base_url=sidecar.url, timeout=30)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        body=request_bodies(),
        header=capture_headers,
        extra=st.dictionaries(header_names, header_values, max_size=3),
    )
    def check(body: tuple[bytes, Any], header: str | None, extra: dict[str, str]) -> None:
        raw, payload = body
        headers = {"x-stub-echo": "1", "content-type": "application/json", **extra}
        if header is not None:
            headers["x-driftloop-capture"] = header
        decided = None
        if payload is not ABSENT:
            model = payload.get("model")
            label = (
                model
                if isinstance(model, str)
                and model in {*ALIASES, *ALIASES.values(), *CAPTURED_MODELS}
                else "other"
            )
            decided = (label, expected_decision(payload, header))
            before = sidecar.metric(
                "driftloop_capture_decisions_total", model=label, decision=decided[1]
            )

        reply = http.post("/v1/chat/completions", content=raw, headers=headers)

        assert reply.status_code == 200, reply.text  # the echoing stub always says 200
        seen = reply.json()
        assert "x-driftloop-capture" not in seen["headers"]
        assert all(seen["headers"][name] == value for name, value in extra.items())
        forwarded = seen["body"].encode("latin-1")
        if payload is ABSENT:
            assert forwarded == raw
            return
        assert decided is not None
        after = sidecar.metric(
            "driftloop_capture_decisions_total", model=decided[0], decision=decided[1]
        )
        assert after == before + 1
        model = payload.get("model")
        aliased = isinstance(model, str) and model in ALIASES
        options = payload.get("stream_options")
        injects = (
            decided[1] in ("forced", "sampled_in")
            and payload.get("stream") is True
            and (options is None or isinstance(options, dict))
            and not (options or {}).get("include_usage")
        )
        if not aliased and not injects:
            assert forwarded == raw
            return
        sent = json.loads(forwarded)
        assert sent.get("model") == (ALIASES[model] if aliased else model)
        if injects:
            assert sent["stream_options"] == {**(options or {}), "include_usage": True}
        rest = {k: v for k, v in sent.items() if k not in ("model", "stream_options")}
        assert canonical(rest) == canonical(
            {k: v for k, v in payload.items() if k not in ("model", "stream_options")}
        )

    try:
        check()
    finally:
        http.close()


segments = st.lists(
    st.one_of(
        st.sampled_from([".", "..", "", "v1", "chat", "%2e"]),
        st.text(string.ascii_letters, min_size=1, max_size=5),
    ),
    max_size=8,
)


@given(segments)
def test_normalised_paths_have_no_dot_segments_and_are_stable(parts: list[str]):
    path = normalise_path("/" + "/".join(parts))
    assert path.startswith("/")
    assert not {".", ".."} & set(path.split("/"))
    assert normalise_path(path) == path


@given(segments)
def test_a_path_is_forwarded_only_if_its_normal_form_is_allowed(parts: list[str]):
    policy = PathPolicy(DEFAULT_FORWARD_PATHS)
    path = normalise_path("/" + "/".join(parts))
    exact = {p for p in DEFAULT_FORWARD_PATHS if not p.endswith("/*")}
    prefixes = [p[:-1] for p in DEFAULT_FORWARD_PATHS if p.endswith("/*")]
    assert policy.allows(path) == (path in exact or any(path.startswith(p) for p in prefixes))


userinfo = st.text(
    string.ascii_letters + string.digits + "%!$&'()*+,;=-._~", min_size=1, max_size=12
)


@given(user=userinfo, password=userinfo, port=st.integers(1, 65535))
def test_redacted_urls_never_show_the_password(user: str, password: str, port: int):
    url = f"http://{user}:{password}@vllm.internal:{port}/v1"
    shown = redact_url(url)
    assert shown == f"http://***@vllm.internal:{port}/v1"
    assert redact_url(f"failed to reach {url}: refused") == f"failed to reach {shown}: refused"
    bare, credentials = split_credentials(url)
    assert bare == f"http://vllm.internal:{port}/v1" and credentials is not None


@given(st.ip_addresses(v=4))
def test_trusted_networks_match_cidr_membership(address: ipaddress.IPv4Address):
    trusted = TrustedNetworks(["10.0.0.0/8", "127.0.0.0/8"])
    expected = address in ipaddress.ip_network("10.0.0.0/8") or address.is_loopback
    assert trusted.trusts((str(address), 1234)) == expected
