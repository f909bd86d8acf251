"""`glimpsed run --once`, `glimpsed submit` and `glimpsed doctor` as real commands."""

from __future__ import annotations

import json
from pathlib import Path


def test_run_once_processes_the_inbox_and_exits(start_daemon, photo):
    d = start_daemon(run=False)
    (d.inbox / "a.jpg").write_bytes(photo(20))
    (d.inbox / "b.jpg").write_bytes(photo(21))
    result = d.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    assert "processed 2 job(s)" in result.stdout
    assert sorted(p.parent.name for p in d.published()) == ["a", "b"]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    job_lines = [entry for entry in lines if entry["event"] in ("job_started", "stage_started", "job_published")]
    assert job_lines and all("job_id" in entry for entry in job_lines)
    assert {entry["stage"] for entry in lines if entry["event"] == "stage_started"} == {
        "segment", "multiview", "depth", "reconstruct", "enhance", "refine", "export"}


def test_submit_prints_the_output_folder_and_leaves_the_file(start_daemon, photo, tmp_path):
    d = start_daemon(run=False)
    src = tmp_path / "elsewhere" / "boot.jpg"
    src.parent.mkdir()
    src.write_bytes(photo(22))
    result = d.cli("submit", str(src))
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert folder == d.outbox / "boot" and (folder / "manifest.json").exists()
    assert src.exists()
    again = d.cli("submit", str(src))  # same content: not recomputed, same folder printed
    assert again.returncode == 0 and Path(again.stdout.strip()) == folder and "same content" in again.stderr


def test_submit_a_bad_file_exits_non_zero(start_daemon, tmp_path):
    d = start_daemon(run=False)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    result = d.cli("submit", str(bad), check=False)
    assert result.returncode == 1 and "not an image" in result.stderr and bad.exists()


def test_doctor_reports_each_check(start_daemon):
    d = start_daemon(run=False)
    result = d.cli("doctor", "--json", check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["python"]["status"] == "ok" and checks["torch"]["status"] == "ok"
    assert checks["inbox"]["status"] == "ok" and checks["outbox"]["status"] == "ok"
    assert "watching" in checks["inbox filesystem"]["detail"]
    assert any(name.startswith("model ") for name in checks)
    assert result.returncode == 0, result.stdout
    (d.inbox).rename(d.root / "gone")
    result = d.cli("doctor", check=False)
    assert result.returncode == 1 and "FAIL" in result.stdout
