"""models.model_inventory: pure filesystem checks of the model files the backends read."""

from __future__ import annotations

import zipfile

from ai_modules.errors import ModelNotAvailable
from ai_modules.models import model_inventory


def torch_archive(path, names: tuple[str, ...] = ()) -> None:
    """A file in torch.save's zip layout holding a dict with `names` as keys (what `readable` checks: the
    archive is whole and names the tensors the loader needs)."""
    import pickle

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(dict.fromkeys(names), protocol=2))


def test_inventory_reports_missing_and_present_models(tmp_path):
    models = tmp_path / "models"
    (models / "syncdreamer").mkdir(parents=True)
    torch_archive(models / "syncdreamer" / "syncdreamer-pretrain.ckpt")
    assert not {r.name: r for r in model_inventory(models)}["syncdreamer-pretrain"].present   # not SyncDreamer's
    torch_archive(models / "syncdreamer" / "syncdreamer-pretrain.ckpt",
                  ("state_dict", "cc_projection.weight", "model.diffusion_model.time_embed.0.weight"))
    dpt = models / "depth" / "dpt-hybrid-midas"
    dpt.mkdir(parents=True)
    (dpt / "config.json").write_text("{}")
    assert not {r.name: r for r in model_inventory(models)}["dpt-hybrid-midas"].present   # no weights: not a model
    (dpt / "preprocessor_config.json").write_text("{}")
    (dpt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 half of a download")
    assert not {r.name: r for r in model_inventory(models)}["dpt-hybrid-midas"].present   # truncated: not a model
    torch_archive(dpt / "pytorch_model.bin", ("dpt.embeddings.cls_token", "head.head.0.weight"))
    u2net_home = tmp_path / "u2"
    u2net_home.mkdir()
    (u2net_home / "u2net.onnx").write_bytes(b"x")
    rows = {r.name: r for r in model_inventory(models, env={"U2NET_HOME": str(u2net_home)})}
    assert {r.stage for r in rows.values()} == {"segment", "multiview", "depth", "enhance", "refine"}
    assert rows["syncdreamer-pretrain"].present and rows["dpt-hybrid-midas"].present
    assert rows["u2net"].present and rows["u2net"].path == u2net_home / "u2net.onnx"
    missing = rows["isnet-general-use"]
    assert not missing.present and missing.path == models / "u2net" / "isnet-general-use.onnx"
    err = missing.error()
    assert isinstance(err, ModelNotAvailable) and "isnet-general-use.onnx" in str(err) and "fetch it" in str(err)
    assert not rows["sdxl-base"].present and rows["sdxl-base"].kind == "dir"
    assert missing.to_dict()["present"] is False


def test_inventory_without_models_dir(tmp_path):
    rows = model_inventory(None, env={"U2NET_HOME": str(tmp_path)})
    syncdreamer = next(r for r in rows if r.name == "syncdreamer-pretrain")
    assert syncdreamer.path is None and not syncdreamer.present
    assert "<models_dir>/syncdreamer/syncdreamer-pretrain.ckpt" in str(syncdreamer.error())
