"""The control API's own uvicorn server, on its own thread and event loop.

The proxy's event loop must never wait on the control API (its routes read DuckDB, its audit log
writes it), so ``serve`` runs the API here and the sidecar on the main thread's loop.

>>> # with ApiServer(app, "127.0.0.1", 0) as server: httpx.get(server.url + "/api/v1/status")
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import uvicorn


class ApiServerError(RuntimeError):
    """The control API could not start; the message names the address."""


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals belong to the main thread's serve()
        yield


def api_uvicorn_config(app: object, host: str, port: int) -> uvicorn.Config:
    """How the control API is served (its own settings, independent of the sidecar's)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        # The audited client is the TCP peer: X-Forwarded-For from loopback would let any local
        # process name itself anyone. Put a proxy in front only if it is also audited.
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )


class ApiServer:
    """Runs ``app`` under uvicorn in a daemon thread; ``start`` returns once it listens."""

    def __init__(self, app: object, host: str, port: int) -> None:
        self.host = host
        self._server = _ThreadServer(api_uvicorn_config(app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="control-api", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        servers = getattr(self._server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._server.config.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise ApiServerError(
                    f"the control API could not listen on {self.host}:{self._server.config.port}"
                    " (api.host / api.port): see the log line above"
                )
            if time.monotonic() > deadline:
                raise ApiServerError(f"the control API did not start within {timeout_s:.0f} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop accepting, finish in-flight calls, run the shutdown (which flushes the audit)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join((self._server.config.timeout_graceful_shutdown or 10) + 5)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
