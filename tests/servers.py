"""Real servers on 127.0.0.1 for tests: an ASGI app under uvicorn in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals belong to the main thread
        yield


@contextlib.contextmanager
def serve_in_thread(app: object, **options: Any) -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port; yields its base URL; stops (with lifespan) after.

    ``options`` are extra uvicorn settings (a sidecar's ``server_options()``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings: dict[str, Any] = {"http": "httptools", **options}
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        loop="asyncio",
        lifespan="on",
        access_log=False,
        log_level="warning",
        **settings,
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
