"""Startup check that every configured listener can bind, before anything slow is started.

uvicorn reports a busy port or an unknown host only after vLLM took minutes to start, with a
traceback. Binding each address once (and releasing it) first turns those into one line naming
the key and the value. A port taken between this check and uvicorn's bind still fails there.
"""

from __future__ import annotations

import errno
import socket

from driftloop.config import Config, ConfigError

# A launched vLLM listens on loopback (driftloop.vllm_process.VLLMServer's default host).
VLLM_HOST = "127.0.0.1"


def listeners(cfg: Config) -> list[tuple[str, str, int]]:
    """(key prefix, host, port) of every server ``serve`` starts."""
    found = [("sidecar", cfg.sidecar.host, cfg.sidecar.port), ("api", cfg.api.host, cfg.api.port)]
    if cfg.vllm.launch:
        found.append(("vllm", VLLM_HOST, cfg.vllm.port))
    return found


def check_listeners(cfg: Config) -> None:
    """Raise ``ConfigError`` naming the first host that does not resolve or port that will not bind."""
    for section, host, port in listeners(cfg):
        check_bindable(section, host, port)


def check_bindable(section: str, host: str, port: int) -> None:
    host_key = "vllm host" if section == "vllm" else f"{section}.host"  # vllm has no host key
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(f"{host_key} = {host!r} does not resolve: {reason}") from None
    with socket.socket(family, kind, proto) as probe:
        # uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free, one that listens is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(_bind_problem(section, host_key, host, port, exc)) from None


def _bind_problem(section: str, host_key: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{section}.port = {port} is already in use on {host}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host_key} = {host!r} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"{section}.port = {port} needs privileges on {host} (use a port above 1023)"
    return f"{section}.port = {port} on {host!r} cannot be bound: {exc.strerror}"
