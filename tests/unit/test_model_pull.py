"""`glimpsed models pull | verify | list`: every model arrives whole and verified, or not at all — from a local
HTTP server and a fake Hugging Face hub laid out like the real repositories."""

from __future__ import annotations

import hashlib
import io
import http.server
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai_modules.models import MODEL_BY_NAME, MODELS, Source, model_status
from glimpsed.cli import main
from glimpsed.model_pull import LOCK_FILE, LicenceNotAccepted, PullError, inventory, names_for, pull, verify

CONTENT = b"onnx-bytes" * 1000


def serve(data: bytes) -> tuple[str, http.server.ThreadingHTTPServer]:
    """A local HTTP server that answers every GET with `data`: (its base URL, the server to shut down)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


@pytest.fixture(scope="module")
def server():
    url, httpd = serve(CONTENT)
    yield f"{url}/u2net.onnx"
    httpd.shutdown()


def with_source(monkeypatch, name: str, *sources: Source) -> None:
    """Point model `name` at other sources (the table is frozen data: replace its line)."""
    import dataclasses

    from ai_modules import models

    spec = dataclasses.replace(MODEL_BY_NAME[name], sources=sources)
    monkeypatch.setitem(models.MODEL_BY_NAME, name, spec)


def test_a_url_file_is_verified_then_renamed_into_place_and_locked(server, tmp_path, monkeypatch):
    md5 = hashlib.md5(CONTENT).hexdigest()
    with_source(monkeypatch, "u2net", Source("url", server, checksum=f"md5:{md5}"))
    seen = []
    (path,) = pull("u2net", tmp_path, progress=lambda name, done, total: seen.append((done, total)))
    assert path == tmp_path / "u2net" / "u2net.onnx" and path.read_bytes() == CONTENT
    assert seen[-1] == (len(CONTENT), len(CONTENT)) and not list(tmp_path.rglob("*.part"))
    lock = json.loads((tmp_path / LOCK_FILE).read_text())["models"]["u2net"]
    assert lock["files"][""] == {"bytes": len(CONTENT), "sha256": hashlib.sha256(CONTENT).hexdigest()}
    path.write_bytes(b"kept")
    assert pull("u2net", tmp_path)[0].read_bytes() == b"kept"                      # present: not fetched again
    assert {c.name: c.status for c in verify(tmp_path, ["u2net"])} == {"u2net": "corrupt"}
    assert pull("u2net", tmp_path, force=True)[0].read_bytes() == CONTENT          # --force fetches again
    assert verify(tmp_path, ["u2net"])[0].status == "ok"


def test_a_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    with_source(monkeypatch, "u2net", Source("url", server, checksum="md5:" + "0" * 32))
    with pytest.raises(PullError, match="does not match the published"):
        pull("u2net", tmp_path)
    assert not list(tmp_path.rglob("*.onnx*")) and not (tmp_path / LOCK_FILE).exists()


def test_an_unreachable_url_is_a_clear_error(tmp_path, monkeypatch):
    with_source(monkeypatch, "u2net", Source("url", "http://127.0.0.1:9/u2net.onnx"))
    with pytest.raises(PullError, match="cannot fetch http://127.0.0.1:9/u2net.onnx"):
        pull("u2net", tmp_path)


# --------------------------------------------------------------------------------------------- a fake hub

def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pinned(repo: str) -> str | None:
    """The revision the models table pins for hub repository `repo`."""
    return next((s.revision for m in MODELS for s in m.sources if s.location == repo and s.revision), None)


class FakeHub:
    """huggingface_hub's three calls over in-memory repositories: ``{(repo_type, repo): {path: bytes}}`` at one
    commit each, the table's pinned revision where it pins one. Files over 1 kB are "LFS" files (their etag is
    their sha256, as on the hub); smaller ones get a git blob sha1, as on the hub."""

    def __init__(self, repos: dict[tuple[str, str], dict[str, bytes]]) -> None:
        self.repos = repos
        self.commits = {key: pinned(key[1]) or hashlib.sha1(repr(key).encode()).hexdigest() for key in repos}
        self.calls: list[tuple[str, str, str]] = []
        self.tamper: dict[str, bytes] = {}          # file -> what the download really delivers
        self.break_after: int | None = None         # downloads that succeed before one dies half-way

    def install(self, monkeypatch) -> None:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "hf_hub_url", self.url)
        monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", self.metadata)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.download)

    def _file(self, repo: str, filename: str, repo_type: str | None, revision: str | None) -> bytes:
        key = (repo_type or "model", repo)
        if key not in self.repos or filename not in self.repos[key]:
            raise FileNotFoundError(f"404: {repo}/{filename}")
        if revision not in (None, "main", self.commits[key]):
            raise FileNotFoundError(f"404: revision {revision} of {repo}")
        return self.repos[key][filename]

    def url(self, repo: str, filename: str, *, repo_type: str | None = None, revision: str | None = None) -> str:
        return json.dumps([repo, filename, repo_type, revision])

    def metadata(self, url: str):
        repo, filename, repo_type, revision = json.loads(url)
        data = self._file(repo, filename, repo_type, revision)
        etag = hashlib.sha256(data).hexdigest() if len(data) > 1000 else git_sha1(data)
        return type("Meta", (), {"etag": f'"{etag}"', "size": len(data),
                                 "commit_hash": self.commits[(repo_type or "model", repo)]})

    def download(self, repo: str, filename: str, *, repo_type: str | None = None, revision: str | None = None,
                 local_dir: Path, force_download: bool = False) -> str:
        data = self.tamper.get(filename, self._file(repo, filename, repo_type, revision))
        self.calls.append((repo, filename, revision or ""))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.break_after is not None:
            if self.break_after == 0:
                path.write_bytes(data[: len(data) // 2])
                self.break_after = None
                raise ConnectionError("connection reset")
            self.break_after -= 1
        path.write_bytes(data)
        return str(path)


def repo_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory) -> dict[tuple[str, str], dict[str, bytes]]:
    """The repositories as the real hub has them at their head (file names and layout), with tiny models in them:
    DPT on `main` holds only `pytorch_model.bin`; SDXL's components only their fp16 files."""
    from ai_modules.diffusion.tiny import write_tiny_enhance_models
    from tests.tiny_models import tiny_dinov2, tiny_dpt, tiny_processor, write_tiny_syncdreamer, write_tiny_trellis

    root = tmp_path_factory.mktemp("published")
    dpt = root / "dpt"
    model = tiny_dpt()
    model.save_pretrained(dpt)
    import torch

    torch.save(model.state_dict(), dpt / "pytorch_model.bin")       # the hub's main has only the pickled weights
    tiny_processor().save_pretrained(dpt)
    write_tiny_syncdreamer(root)
    tiny = write_tiny_enhance_models(root / "sdxl")
    base = repo_files(tiny["sdxl-base"])
    sdxl = {name: data for name, data in base.items() if not name.startswith("unet/diffusion")}
    for part in ("text_encoder/model", "text_encoder_2/model", "vae/diffusion_pytorch_model"):
        sdxl[f"{part}.fp16.safetensors"] = sdxl.pop(f"{part}.safetensors")
    for tok in ("tokenizer", "tokenizer_2"):
        sdxl[f"{tok}/special_tokens_map.json"] = b"{}"
    control = repo_files(tiny["controlnet-depth-sdxl"])
    control["diffusion_pytorch_model.fp16.safetensors"] = control.pop("diffusion_pytorch_model.safetensors")
    return {
        ("model", "Intel/dpt-hybrid-midas"): {k: v for k, v in repo_files(dpt).items()
                                              if k in ("config.json", "preprocessor_config.json", "pytorch_model.bin")},
        ("space", "liuyuan-pal/SyncDreamer"): {"ckpt/syncdreamer-pretrain.ckpt":
                                               (root / "syncdreamer" / "syncdreamer-pretrain.ckpt").read_bytes(),
                                               "app.py": b"import gradio"},
        ("model", "camenduru/SyncDreamer"): {"syncdreamer-pretrain.ckpt":
                                             (root / "syncdreamer" / "syncdreamer-pretrain.ckpt").read_bytes()},
        ("model", "stabilityai/stable-diffusion-xl-base-1.0"): sdxl,
        ("model", "ByteDance/SDXL-Lightning"): {"sdxl_lightning_4step_unet.safetensors": tiny[
            "sdxl-lightning-4step-unet"].read_bytes()},
        ("model", "diffusers/controlnet-depth-sdxl-1.0"): control,
        ("model", "timm/vit_small_patch14_dinov2.lvd142m"): repo_files(tiny_dinov2(root / "dino")),
        ("model", "microsoft/TRELLIS-image-large"): {**repo_files(write_tiny_trellis(root / "trellis")),
                                                     "README.md": b"---\nlicense: mit\n---\n"},
        "syncdreamer-config": {"config.json": (root / "syncdreamer" / "config.json").read_bytes()},
        "dinov2-pth": {"": (root / "trellis" / "trellis" / "dinov2_vitl14_reg4_pretrain.pth").read_bytes()},
    }


@pytest.fixture
def real_hashes_hub(hub_repos, monkeypatch) -> FakeHub:
    """The fake hub, with the table's publisher hashes as they are (the real files' hashes, not the tiny ones')."""
    fake = FakeHub({k: dict(v) for k, v in hub_repos.items() if isinstance(k, tuple)})
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def hub(real_hashes_hub, monkeypatch) -> FakeHub:
    """The fake hub, with the table's publisher hashes replaced by those of the tiny files it serves."""
    import dataclasses

    from ai_modules import models

    for spec in (m for m in MODELS if m.sha256 and m.sources[0].kind == "hf"):
        source = spec.sources[0]
        files = real_hashes_hub.repos.get((source.repo_type, source.location), {})
        by_local = {local: files[remote] for remote, local in source.files if remote in files}
        tiny = tuple((local, hashlib.sha256(by_local[local]).hexdigest()) for local, _ in spec.sha256)
        monkeypatch.setitem(models.MODEL_BY_NAME, spec.name, dataclasses.replace(spec, sha256=tiny))
    return real_hashes_hub


def test_the_publishers_hash_is_checked(real_hashes_hub, tmp_path):
    with pytest.raises(PullError, match="pytorch_model.bin: sha256 [0-9a-f]+ does not match the publisher's "
                                        "b6c4d44f9d96ca3fa76dd3bbb153989a60b4ad5526559f3c598562a368d687ec"):
        pull("dpt", tmp_path)
    assert not (tmp_path / "depth").exists() or not list((tmp_path / "depth").rglob("*.bin"))


def test_every_hub_backend_pulls_verifies_and_loads(hub, hub_repos, tmp_path):
    import torch

    paths = pull(["syncdreamer-pretrain", "dpt", "sdxl_lightning", "mvcrm"], tmp_path, accept_licence=True)
    assert len(paths) == 6 and all(model_status(n, tmp_path).present for n in
                                   ("syncdreamer-pretrain", "dpt-hybrid-midas", "sdxl-base", "dinov2"))
    assert ("liuyuan-pal/SyncDreamer", "ckpt/syncdreamer-pretrain.ckpt", hub.commits[
        ("space", "liuyuan-pal/SyncDreamer")]) in hub.calls                     # the author's Space first
    assert (tmp_path / "depth" / "dpt-hybrid-midas" / "pytorch_model.bin").is_file()
    checks = {c.name: c.status for c in verify(tmp_path)}
    assert checks == {"isnet-general-use": "missing", "u2net": "missing", "clip-vit-l-14": "missing",
                      "trellis-image-large": "missing", "dinov2-vitl14-reg": "missing",
                      **{n: "ok" for n in ("syncdreamer-pretrain", "dpt-hybrid-midas", "sdxl-base",
                                           "sdxl-lightning-4step-unet", "controlnet-depth-sdxl", "dinov2")}}
    lock = json.loads((tmp_path / LOCK_FILE).read_text())["models"]
    assert lock["dpt-hybrid-midas"]["revision"] == hub.commits[("model", "Intel/dpt-hybrid-midas")]
    assert set(lock["sdxl-base"]["files"]) == set(hub.repos[("model", "stabilityai/stable-diffusion-xl-base-1.0")])
    assert not list(tmp_path.rglob("*.part"))

    from ai_modules.diffusion import EnhanceService
    from ai_modules.midas_depth import DepthEstimator
    from ai_modules.refine.features import load_dinov2
    from ai_modules.sync_dreamer.generate import SyncDreamer

    assert DepthEstimator(tmp_path).weights_file.name == "pytorch_model.bin"        # read as the hub has it
    assert isinstance(load_dinov2(tmp_path / "refine" / "dinov2"), torch.nn.Module)
    EnhanceService(device="cpu", models_dir=tmp_path, resolution=64).load().unload()
    (tmp_path / "syncdreamer" / "config.json").write_bytes(hub_repos["syncdreamer-config"]["config.json"])
    assert SyncDreamer.from_models_dir(tmp_path, "cpu").model is not None          # (the tiny model's sizes)


def test_trellis_pulls_pinned_from_the_hub_and_dinov2_from_its_url_then_loads(hub, hub_repos, tmp_path,
                                                                               monkeypatch):
    """pipeline.json and the four networks' json + safetensors at the pinned revision (the hub's LFS sha256s
    checked), DINOv2 over HTTPS with no published hash, so the lock file pins the one it got."""
    from ai_modules.trellis.loading import load_trellis

    data = hub_repos["dinov2-pth"][""]
    url, httpd = serve(data)
    try:
        with_source(monkeypatch, "dinov2-vitl14-reg", Source("url", f"{url}/dinov2_vitl14_reg4_pretrain.pth"))
        folder, dino = pull("trellis", tmp_path)
    finally:
        httpd.shutdown()
    repo = ("model", "microsoft/TRELLIS-image-large")
    fetched = {f for _, f, rev in hub.calls if rev == hub.commits[repo]}
    assert fetched == set(MODEL_BY_NAME["trellis-image-large"].required)
    assert hub.commits[repo] == "25e0d31ffbebe4b5a97464dd851910efc3002d96" and not (folder / "README.md").exists()
    lock = json.loads((tmp_path / LOCK_FILE).read_text())["models"]
    assert lock["trellis-image-large"]["revision"] == hub.commits[repo]
    assert lock["dinov2-vitl14-reg"]["files"][""]["sha256"] == hashlib.sha256(data).hexdigest()
    assert {c.name: c.status for c in verify(tmp_path, ["trellis-image-large", "dinov2-vitl14-reg"])} == {
        "trellis-image-large": "ok", "dinov2-vitl14-reg": "ok"}
    models, settings = load_trellis(folder, dino)
    assert settings.ss_sampler.steps == 3 and models.gs_decoder.num_gaussians == 32
    dino.write_bytes(data[: len(data) // 2])                                      # a truncated file is not present
    assert not model_status("dinov2-vitl14-reg", tmp_path).present


def test_the_mirror_is_used_when_the_authors_space_fails(hub, tmp_path):
    del hub.repos[("space", "liuyuan-pal/SyncDreamer")]
    (path,) = pull("syncdreamer", tmp_path)
    assert path.is_file() and hub.calls[-1][0] == "camenduru/SyncDreamer"
    assert json.loads((tmp_path / LOCK_FILE).read_text())["models"]["syncdreamer-pretrain"]["source"] == \
        "huggingface.co/camenduru/SyncDreamer"


def test_a_tampered_download_and_an_interrupted_one_leave_nothing_and_the_next_pull_finishes(hub, tmp_path):
    weights = hub.repos[("model", "Intel/dpt-hybrid-midas")]["pytorch_model.bin"]
    hub.tamper["pytorch_model.bin"] = weights[:-4] + b"evil"                # the right size, other bytes
    with pytest.raises(PullError, match="does not match the publisher's"):
        pull("dpt", tmp_path)
    ckpt = hub.repos[("space", "liuyuan-pal/SyncDreamer")]["ckpt/syncdreamer-pretrain.ckpt"]
    hub.tamper["ckpt/syncdreamer-pretrain.ckpt"] = hub.tamper["syncdreamer-pretrain.ckpt"] = ckpt[:-4] + b"evil"
    with pytest.raises(PullError, match="does not match the hub's .* then: .* does not match the hub's"):
        pull("syncdreamer", tmp_path)                                   # no publisher hash: the hub's LFS sha256
    assert not (tmp_path / "depth" / "dpt-hybrid-midas").exists() and not model_status("dpt-hybrid-midas",
                                                                                        tmp_path).present
    hub.tamper.clear()
    hub.break_after = 1                                                  # dies half-way through the second file
    with pytest.raises(PullError, match="connection reset"):
        pull("dpt", tmp_path)
    assert not list(tmp_path.rglob("pytorch_model.bin")) and not model_status("dpt-hybrid-midas", tmp_path).present
    (path,) = pull("dpt", tmp_path)
    assert verify(tmp_path, ["dpt-hybrid-midas"])[0].status == "ok" and not list(tmp_path.rglob("*.part"))


def test_a_folder_without_its_weights_is_not_present_and_force_fetches_again(hub, tmp_path):
    folder = tmp_path / "depth" / "dpt-hybrid-midas"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text("{}")
    assert not model_status("dpt-hybrid-midas", tmp_path).present                 # the old pull's leftovers
    pull("dpt", tmp_path)
    assert model_status("dpt-hybrid-midas", tmp_path).present
    calls = len(hub.calls)
    pull("dpt", tmp_path)
    assert len(hub.calls) == calls                                                # whole: kept
    pull("dpt", tmp_path, force=True)
    assert len(hub.calls) == calls + 3 and all(c[2] == hub.commits[("model", "Intel/dpt-hybrid-midas")]
                                               for c in hub.calls[-3:])           # at the locked revision


def test_restricted_licences_need_acceptance(hub, tmp_path):
    with pytest.raises(LicenceNotAccepted, match="CreativeML Open RAIL\\+\\+-M.*--accept-licence"):
        pull("sdxl_lightning", tmp_path)
    assert hub.calls == [] and not (tmp_path / "enhance").exists()
    result = CliRunner().invoke(main, ["models", "pull", "controlnet-depth-sdxl", "--set", f"paths.root={tmp_path}"])
    assert result.exit_code == 1 and "--accept-licence" in result.output


def test_pull_to_a_folder_then_copy_verifies(hub, tmp_path):
    result = CliRunner().invoke(main, ["models", "pull", "dpt", "mvcrm", "--to", str(tmp_path / "carry"),
                                       "--set", f"paths.root={tmp_path / 'online'}"])
    assert result.exit_code == 0, result.output
    assert "dpt-hybrid-midas: Apache License 2.0" in result.output
    import shutil

    shutil.copytree(tmp_path / "carry", tmp_path / "offline" / "var" / "models")
    models = tmp_path / "offline" / "var" / "models"
    result = CliRunner().invoke(main, ["models", "verify", "dpt", "--json", "--set",
                                       f"paths.models={models}", "--set", f"paths.root={tmp_path / 'offline'}"])
    assert result.exit_code == 0, result.output
    assert [c["status"] for c in json.loads(result.output)] == ["ok"]
    weights = models / "depth" / "dpt-hybrid-midas" / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    result = CliRunner().invoke(main, ["models", "verify", "--set", f"paths.models={models}",
                                       "--set", f"paths.root={tmp_path / 'offline'}"])
    assert result.exit_code == 1 and "corrupt" in result.output


def test_list_shows_status_size_licence_source_and_revision(hub, tmp_path):
    pull("dpt", tmp_path)
    rows = {r["name"]: r for r in inventory(tmp_path)}
    assert len(rows) == len(MODELS)
    dpt, sdxl = rows["dpt-hybrid-midas"], rows["sdxl-base"]
    assert dpt["status"] == "present" and dpt["bytes"] > 0 and dpt["licence"] == "apache-2.0"
    assert dpt["revision"] == hub.commits[("model", "Intel/dpt-hybrid-midas")]
    assert sdxl["status"] == "missing" and sdxl["restricted"] and sdxl["revision"] == pinned(
        "stabilityai/stable-diffusion-xl-base-1.0") == "462165984030d82259a11f4367a4eed129e94a7b"
    assert rows["syncdreamer-pretrain"]["revision"].startswith("not pinned yet")
    assert rows["syncdreamer-pretrain"]["sources"] == ["huggingface.co/spaces/liuyuan-pal/SyncDreamer",
                                                       "huggingface.co/camenduru/SyncDreamer"]
    (tmp_path / "depth" / "dpt-hybrid-midas" / "config.json").write_text('{"truncated": 1}')
    assert {r["name"]: r for r in inventory(tmp_path)}["dpt-hybrid-midas"]["status"] == "corrupt"


def test_every_model_has_a_licence_and_a_source():
    for m in MODELS:
        assert m.licence.id and m.licence.url.startswith("https://") and m.sources
        assert m.kind == "file" or m.required


def test_targets_are_backends_or_model_names():
    assert names_for("syncdreamer") == ("syncdreamer-pretrain",)
    assert names_for("sdxl_lightning") == ("sdxl-base", "sdxl-lightning-4step-unet", "controlnet-depth-sdxl")
    assert names_for("rembg") == ("isnet-general-use",) and names_for("u2net") == ("u2net",)
    assert names_for("mvcrm") == ("dinov2", "dpt-hybrid-midas")
    with pytest.raises(PullError, match="known: .*syncdreamer"):
        names_for("zero123")


def test_cli_pull_reports_an_unknown_target(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIMPSED_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["models", "pull", "zero123", "--set", f"paths.root={tmp_path}"])
    assert result.exit_code == 1 and "unknown model or backend 'zero123'" in result.output



def test_weights_without_the_tensors_their_loader_needs_are_not_present(hub, hub_repos, tmp_path):
    import torch
    from safetensors.torch import save_file

    pull(["mvcrm", "syncdreamer"], tmp_path)
    assert model_status("dinov2", tmp_path).present and model_status("syncdreamer-pretrain", tmp_path).present
    save_file({"encoder.weight": torch.zeros(2)}, tmp_path / "refine" / "dinov2" / "model.safetensors")
    assert not model_status("dinov2", tmp_path).present                  # whole, but another model's weights
    ckpt = tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.time_embed.0.weight": torch.zeros(1)}}, ckpt)
    assert not model_status("syncdreamer-pretrain", tmp_path).present     # no cc_projection: not SyncDreamer's
    torch.save({"state_dict": {"model.diffusion_model.time_embed.0.weight": torch.zeros(1),
                               "cc_projection.weight": torch.zeros(1)}}, ckpt, _use_new_zipfile_serialization=False)
    assert model_status("syncdreamer-pretrain", tmp_path).present         # a legacy (non-zip) pickle is read too
    dpt = tmp_path / "depth" / "dpt-hybrid-midas"
    (dpt / "pytorch_model.bin").unlink()
    save_file(torch.load(io.BytesIO(hub_repos[("model", "Intel/dpt-hybrid-midas")]["pytorch_model.bin"]),
                         weights_only=True), dpt / "model.safetensors")
    assert model_status("dpt-hybrid-midas", tmp_path).present             # either weights file will do
