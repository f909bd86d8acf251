"""Names of every kind: 255 bytes, not UTF-8, a newline, a leading dash, NFC/NFD twins, and an empty file
with a 250-byte name."""

from __future__ import annotations

import json
import os
import unicodedata

from glimpsed.names import NAME_MAX, display
from tests.faults.conftest import audit, drop, make_photo, settled

LONG = "x" * (NAME_MAX - len(".jpg")) + ".jpg"  # 255 bytes: the longest name a filesystem takes
NFC = unicodedata.normalize("NFC", "café.jpg")
NFD = unicodedata.normalize("NFD", "café.jpg")
GOOD_NAMES: list[str | bytes] = [LONG, b"caf\xe9-latin1.jpg", "line\nbreak.jpg", "-rf.jpg", NFC, NFD,
                                 "ünïcødé-日本語.jpg", "sp ace & 'quote'.jpg"]
EMPTY_LONG = "e" * 246 + ".jpg"  # 250 bytes, empty: rejected, and its error.json must fit beside it


def test_names_of_every_kind(daemon, record):
    rec = record("names: 255 bytes, non-UTF-8 (\\xe9), newline, leading dash, NFC/NFD twins, CJK, empty 250-byte")
    d = daemon()
    for i, name in enumerate(GOOD_NAMES):
        drop(d.inbox, name, make_photo(20 + i))
    drop(d.inbox, EMPTY_LONG, b"")
    names = [*GOOD_NAMES, EMPTY_LONG]
    d.wait_for(lambda: settled(d, len(names)), "every name to end", 300)
    log = d.log_path.read_text(errors="replace")
    d.stop()
    result = audit(d, names)
    rec.audit(result, f"{len(GOOD_NAMES)} published (twins apart), the empty one failed with error.json; no worker"
                      " died", jobs=len(d.jobs()))
    result.assert_clean()
    assert "worker_died" not in log and "Traceback" not in log
    assert sorted(result.published) == sorted(display(n) for n in GOOD_NAMES)
    assert len(result.failed) == 1 and result.left_in_inbox == []  # its name shortened to fit .error.json
    folders = sorted(p.parent.name for p in d.published())
    assert len(set(folders)) == len(GOOD_NAMES)  # the NFC/NFD twins are two folders (café, café-2)
    for manifest in d.published():
        assert all(len(os.fsencode(f.name)) <= NAME_MAX for f in manifest.parent.iterdir())
        assert "\n" not in manifest.parent.name  # control characters never reach an outbox name
    assert {unicodedata.normalize("NFC", f) for f in folders} >= {"café", "café-2"}
    (latin1,) = [j for j in d.jobs() if j.source_raw and b"\xe9-latin1" in j.source_raw]
    assert latin1.source_name == "caf\\xe9-latin1.jpg" and latin1.state == "done"
    (error_file,) = (d.root / "failed").glob("*.error.json")
    assert len(os.fsencode(error_file.name)) <= NAME_MAX
    error = json.loads(error_file.read_text())
    assert error["error_type"] == "RejectedFile" and "empty" in error["message"] and error["source"] == EMPTY_LONG
