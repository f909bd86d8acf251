"""The daemon speaks systemd's notify protocol: READY, STATUS, WATCHDOG, STOPPING."""

from __future__ import annotations

import socket
import time


def test_notify_ready_status_watchdog_and_stopping(start_daemon, photo, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    d = start_daemon({"logging": {"format": "auto"}}, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000",
                                                         "JOURNAL_STREAM": "8:1234"}, run=False)
    d.env["NOTIFY_SOCKET"] = str(path)  # the fixture drops an inherited one; this test sets its own
    d.start()
    (d.inbox / "cup.jpg").write_bytes(photo(30))
    d.wait_jobs("done", 1)
    received: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("1 done" in m for m in received):
        try:
            received.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    assert "READY=1" in received
    assert "WATCHDOG=1" in received
    assert any(m.startswith("STATUS=") and "1 done" in m for m in received)
    assert d.stop() == 0
    rest = []
    while True:
        try:
            rest.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    assert "STOPPING=1" in rest
    log = d.log_path.read_text().splitlines()
    assert log and all(line.startswith("{") for line in log if line.strip() and not line.startswith("glimpsed "))
