"""Every bad-input class of the corpus through a running daemon: each file ends published or in failed/
with an error.json whose advice fits the failure; nothing stays in the inbox, the daemon goes on."""

from __future__ import annotations

import json

import pytest

from tests.faults.conftest import audit, settled
from tests.faults.corpus import split, write_corpus


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_whole_corpus(daemon, record):
    d = daemon({"watch": {"incomplete_seconds": 3.0}})
    cases = write_corpus(d.inbox)
    bad, good = split(cases)
    rec = record(f"{len(bad)} bad-input classes + {len(good)} unusual valid photos in one drop")
    d.wait_for(lambda: settled(d, len(cases)), "every file to end", 600)
    log = d.log_path.read_text(errors="replace")
    d.stop()
    result = audit(d, [c.filename for c in cases])
    rec.audit(result, f"{len(good)} published, {len(bad)} in failed/ with error.json, none left in the inbox",
              jobs=len(d.jobs()))
    result.assert_clean()
    assert sorted(result.published) == sorted(c.filename for c in good)
    assert sorted(result.failed) == sorted(c.filename for c in bad)
    assert result.left_in_inbox == [] and "worker_died" not in log
    for case in bad:
        error = json.loads((d.root / "failed" / f"{case.filename}.error.json").read_text())
        assert error["message"] and error["hint"], case
        if case.expect == "failed":  # the photo itself is the problem: a retry cannot help, and says so
            assert error["error_type"] == "NoObjectFound", case
            assert "retry` would fail the same way" in error["hint"] and "drop a new photo" in error["hint"], error
        else:
            assert error["error_type"] == "RejectedFile", case
