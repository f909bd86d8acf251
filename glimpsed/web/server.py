"""Serve the web application from a thread of the daemon (uvicorn), on a socket bound before the thread
starts, so a port in use is known at once and only switches the page off (the daemon runs on)."""

from __future__ import annotations

import asyncio
import socket
import threading

import structlog

from glimpsed.config import DaemonConfig

log = structlog.get_logger(__name__)


class WebServer:
    """The page, the API and /metrics of one daemon.

    Args:
        config: the daemon's config (`web.*`).
        pipeline_version: for /metrics' build info.
    """

    def __init__(self, config: DaemonConfig, pipeline_version: str) -> None:
        self.config = config
        self.pipeline_version = pipeline_version
        self.url: str | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> str | None:
        """Bind `web.host:web.port` and serve; the page's URL, or None (logged) when the port cannot be had."""
        import uvicorn

        from glimpsed.web.app import create_app

        host, port = self.config.web.host, self.config.web.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            log.warning("web_unavailable", host=host, port=port, error=exc.strerror or str(exc),
                        detail="another daemon on this host may serve the page (the store is shared); "
                               "set web.port to serve this one too")
            return None
        sock.listen(64)
        bound = sock.getsockname()[1]
        app = create_app(self.config, self.pipeline_version)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
                                        name="web", daemon=True)
        self._thread.start()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{bound}/"
        log.info("web_started", url=self.url)
        return self.url

    def alive(self) -> bool:
        """The page is served (or was never asked for)."""
        return self._thread is None or self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving (open requests finish)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
