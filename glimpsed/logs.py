"""structlog set-up: readable on a terminal, JSON lines under systemd or when asked."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def use_json(fmt: str) -> bool:
    """`auto` means JSON under systemd (JOURNAL_STREAM is set) or when stderr is not a terminal."""
    if fmt == "auto":
        return bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
    return fmt == "json"


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for this process (the daemon and each worker process call it)."""
    renderer = structlog.processors.JSONRenderer() if use_json(fmt) else structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.dict_tracebacks if use_json(fmt) else structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
