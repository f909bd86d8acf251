"""The fault corpus is what it claims: each case really gets its outcome from ingest and the segment stage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ai_modules.errors import NoObjectFound
from glimpsed.watcher import DEFAULT_EXTENSIONS
from tests.faults import corpus as C
from tests.faults.corpus import Case, build_corpus, check_case, input_dir, segment_image, split, write_corpus

CASES = build_corpus()


def test_corpus_size_and_names() -> None:
    bad, good = split()
    assert len(CASES) >= 36
    assert len(bad) >= 30, f"only {len(bad)} bad cases"
    assert len(good) >= 6, f"only {len(good)} done cases"
    assert {c.expect for c in CASES} == {"done", "rejected", "failed"}
    names = [c.name for c in CASES]
    files = [c.filename.lower() for c in CASES]
    assert len(set(names)) == len(names), "case names are not unique"
    assert len(set(files)) == len(files), "file names are not unique (case-insensitively)"
    digests = {hashlib.sha256(c.data).hexdigest() for c in CASES}
    assert len(digests) == len(CASES), "two cases have the same bytes (the daemon would skip one as a duplicate)"
    for case in CASES:
        assert case.filename.isascii() and case.filename.isprintable() and " " not in case.filename, case
        assert not case.filename.startswith((".", "~")), f"{case.filename}: the watcher ignores hidden files"
        assert Path(case.filename).suffix in DEFAULT_EXTENSIONS, f"{case.filename}: the watcher would not see it"
        assert case.why, case
    assert [c.name for c in C.BAD] == [c.name for c in bad] and [c.name for c in C.GOOD] == [c.name for c in good]


def test_corpus_is_deterministic() -> None:
    rebuilt = [case for build in C.CORPUS_BUILDERS for case in build()]
    assert [(c.filename, hashlib.sha256(c.data).hexdigest()) for c in rebuilt] == \
        [(c.filename, hashlib.sha256(c.data).hexdigest()) for c in CASES]


def test_write_corpus(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    written = write_corpus(folder)
    assert written == list(CASES)
    assert sorted(p.name for p in folder.iterdir()) == sorted(c.filename for c in CASES)  # no temp files left
    for case in CASES:
        assert (folder / case.filename).read_bytes() == case.data
    some = write_corpus(tmp_path / "some", C.GOOD[:2])
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == sorted(c.filename for c in some)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.expect}-{c.name}" for c in CASES])
def test_case(case: Case, tmp_path: Path) -> None:
    try:
        got = check_case(case, tmp_path)
    except Exception as exc:  # intake must turn every bad file into RejectedFile, never crash
        pytest.fail(f"{case.filename}: ingest raised {type(exc).__name__}: {exc} (expected "
                    f"{'RejectedFile' if case.expect == 'rejected' else 'success'}); {case.why}")
    dest = input_dir(case, tmp_path)
    if case.expect == "rejected":
        assert got == "rejected", f"{case.filename} was accepted; {case.why}"
        assert not dest.exists() or not any(dest.iterdir()), "a rejection left files behind"
        return
    assert got == "accepted", f"{case.filename} was rejected; {case.why}"
    image = dest / "image.png"
    assert image.is_file()
    if case.expect == "failed":
        with pytest.raises(NoObjectFound):
            segment_image(image)
    else:
        out = segment_image(image)
        assert 0.01 < out.metrics["mask_area_fraction"] < 0.9, out.metrics
