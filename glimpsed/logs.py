"""structlog set-up: readable on a terminal, JSON lines under systemd or when asked.

The pipeline (`ai_modules`) logs through the standard library; its records pass through the same
processors, so under systemd they are JSON lines too, with the `job_id` and `stage` the worker binds.
"""

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
    """Configure structlog, and the standard library's root logger through it, for this process (the daemon
    and each worker process call it)."""
    as_json = use_json(fmt)
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
    ]
    tracebacks = structlog.processors.dict_tracebacks if as_json else structlog.processors.format_exc_info
    structlog.configure(
        processors=[*shared, tracebacks, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, tracebacks, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
