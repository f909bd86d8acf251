"""`glimpsed models pull`: files arrive whole and verified, or not at all (a local HTTP server, a faked hub)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from glimpsed import model_pull
from glimpsed.cli import main
from glimpsed.model_pull import PullError, Remote, names_for, pull

CONTENT = b"onnx-bytes" * 1000


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(CONTENT)))
            self.end_headers()
            self.wfile.write(CONTENT)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/u2net.onnx"
    httpd.shutdown()


def test_a_url_file_is_verified_then_renamed_into_place(server, tmp_path, monkeypatch):
    md5 = hashlib.md5(CONTENT).hexdigest()
    monkeypatch.setitem(model_pull.REMOTES, "u2net", Remote("url", server, checksum=f"md5:{md5}"))
    seen = []
    (path,) = pull("u2net", tmp_path, progress=lambda name, done, total: seen.append((done, total)))
    assert path == tmp_path / "u2net" / "u2net.onnx" and path.read_bytes() == CONTENT
    assert seen[-1] == (len(CONTENT), len(CONTENT)) and not list(tmp_path.rglob("*.part"))
    path.write_bytes(b"kept")
    assert pull("u2net", tmp_path)[0].read_bytes() == b"kept"                      # present: not fetched again
    assert pull("u2net", tmp_path, force=True)[0].read_bytes() == CONTENT


def test_a_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setitem(model_pull.REMOTES, "u2net", Remote("url", server, checksum="md5:" + "0" * 32))
    with pytest.raises(PullError, match="does not match the published"):
        pull("u2net", tmp_path)
    assert not list(tmp_path.rglob("*.onnx*"))


def test_an_unreachable_url_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(model_pull.REMOTES, "u2net", Remote("url", "http://127.0.0.1:9/u2net.onnx"))
    with pytest.raises(PullError, match="cannot fetch http://127.0.0.1:9/u2net.onnx"):
        pull("u2net", tmp_path)


class FakeHub:
    """huggingface_hub's three calls, serving `content` with the sha256 `etag`."""

    def __init__(self, content: bytes, etag: str) -> None:
        self.content, self.etag, self.calls = content, etag, []

    def install(self, monkeypatch) -> None:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "hf_hub_url", lambda repo, name: f"hub://{repo}/{name}")
        monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata",
                            lambda url: type("Meta", (), {"etag": f'"{self.etag}"', "size": len(self.content)}))
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.download)

    def download(self, repo: str, filename: str, local_dir: Path) -> str:
        self.calls.append((repo, filename))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.content)
        return str(path)


def test_a_hub_file_is_checked_against_the_hubs_sha256(tmp_path, monkeypatch):
    hub = FakeHub(b"ckpt", hashlib.sha256(b"ckpt").hexdigest())
    hub.install(monkeypatch)
    (path,) = pull("syncdreamer", tmp_path)
    assert hub.calls == [("camenduru/SyncDreamer", "syncdreamer-pretrain.ckpt")]
    assert path == tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt" and path.read_bytes() == b"ckpt"
    bad = FakeHub(b"tampered", hashlib.sha256(b"ckpt").hexdigest())
    bad.install(monkeypatch)
    with pytest.raises(PullError, match="does not match the hub's"):
        pull("syncdreamer", tmp_path, force=True)
    assert not path.exists()


def test_targets_are_backends_or_model_names():
    assert names_for("syncdreamer") == ("syncdreamer-pretrain",)
    assert names_for("sdxl_lightning") == ("sdxl-base", "sdxl-lightning-4step-unet", "controlnet-depth-sdxl")
    assert names_for("rembg") == ("isnet-general-use",) and names_for("u2net") == ("u2net",)
    with pytest.raises(PullError, match="known: .*syncdreamer"):
        names_for("zero123")


def test_cli_pull_reports_an_unknown_target(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIMPSED_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["models", "pull", "zero123", "--set", f"paths.root={tmp_path}"])
    assert result.exit_code == 1 and "unknown model or backend 'zero123'" in result.output
