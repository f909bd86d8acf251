"""The exception tree of the daemon. The CLI maps every GlimpsedError to a clean message."""

from __future__ import annotations


class GlimpsedError(Exception):
    """Base class of every error the daemon raises on purpose."""


class ConfigError(GlimpsedError):
    """The configuration is invalid; the message names the key and the fix."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key `{key}`: {message}")


class StoreError(GlimpsedError):
    """The job store cannot be opened or used."""


class JobNotFound(StoreError):
    """No job has the given id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}; `glimpsed jobs` lists them")


class InvalidTransition(StoreError):
    """A job cannot move to the requested state from the one it is in."""


class RejectedFile(GlimpsedError):
    """An inbox file cannot be processed (wrong type, too large, truncated...).

    `reason` says what was wrong and `hint` what the user can do; both go to error.json.
    """

    def __init__(self, path: str, reason: str, hint: str) -> None:
        self.path = path
        self.reason = reason
        self.hint = hint
        super().__init__(f"{path}: {reason}. {hint}")


class IncompleteFile(RejectedFile):
    """The file looks cut off — empty, truncated, zero-filled where data should be — so it may still be
    arriving (a slow, stalled or preallocating writer). Intake judges it only after it has stayed
    unchanged for `watch.incomplete_seconds`."""


class PublishError(GlimpsedError):
    """The outbox could not receive a result."""


class OutboxUnavailable(PublishError):
    """The outbox is gone, unmounted (its sentinel is missing), full or unreachable: a fault of the machine,
    not of the job. Jobs wait for it without spending attempts; `reason` says what to fix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class JobTimeout(GlimpsedError):
    """A job ran longer than `jobs.timeout_seconds`."""


class WorkerLost(GlimpsedError):
    """The worker running a job went away (a Ray actor or its node died): the job is requeued with an attempt
    spent and runs again on a worker that is alive."""
