"""sd_notify: datagrams reach the socket, and a reader that stopped reading never blocks the daemon."""

from __future__ import annotations

import socket
import time

from glimpsed.notify import notify


def test_messages_arrive_and_a_full_queue_drops_instead_of_blocking(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert reader.recv(100) == b"READY=1"
        start = time.monotonic()
        sent = [notify(f"STATUS={i}") for i in range(200)]     # nobody reads: the queue fills up
        assert time.monotonic() - start < 5
        assert sent[0] is True and sent[-1] is False
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False
