"""The model files the backends read: one table (`MODELS`: where each lives, what makes it whole, where it
comes from, under which licence) and whether each is on disk.

Pure filesystem checks (standard library only): nothing is downloaded or
imported. The daemon's `doctor` and `models` commands print `model_inventory`;
`glimpsed models pull` fetches from the table's sources.

Layout under ``models_dir`` (the daemon's config decides where that is)::

    models_dir/
      u2net/                       rembg sessions (also U2NET_HOME, default ~/.u2net)
        isnet-general-use.onnx
        u2net.onnx
      syncdreamer/
        syncdreamer-pretrain.ckpt
        ViT-L-14.pt
      trellis/TRELLIS-image-large/ microsoft/TRELLIS-image-large: pipeline.json + ckpts/ (4 networks)
      trellis/dinov2_vitl14_reg4_pretrain.pth
      depth/dpt-hybrid-midas/      a Hugging Face snapshot (config.json + weights)
      enhance/sdxl-base/           stabilityai/stable-diffusion-xl-base-1.0 snapshot
      enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors
      enhance/controlnet-depth-sdxl/   diffusers/controlnet-depth-sdxl-1.0 snapshot
      refine/dinov2/               timm/vit_small_patch14_dinov2.lvd142m (config.json + model.safetensors)
"""

from __future__ import annotations

import json
import os
import pickletools
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .backends import BACKENDS, models_of
from .errors import ModelNotAvailable


@dataclass(frozen=True)
class Licence:
    """The terms a model's weights come under.

    Attributes:
        id: short name, e.g. "apache-2.0", "creativeml-openrail++-m", "unstated".
        name: human name. url: where the text is.
        restricted: it places use restrictions a user must accept (`models pull --accept-licence`).
    """

    id: str
    name: str
    url: str
    restricted: bool = False


@dataclass(frozen=True)
class Source:
    """One place a model can be fetched from (a model lists them in the order they are tried).

    Attributes:
        kind: "url" (one file over HTTPS) or "hf" (files of a Hugging Face repository).
        location: the URL, or the repo id.
        files: "hf": ``(path in the repo, path under the model's folder)`` pairs ("" for a single-file model).
        revision: "hf": the commit to fetch; None: the branch's head at the first pull, which the lock
            file (`models.lock.json`) then pins for every later pull.
        repo_type: "hf": "model" or "space".
        checksum: "url": "md5:<hex>" or "sha256:<hex>" as the publisher gives it.
    """

    kind: str
    location: str
    files: tuple[tuple[str, str], ...] = ()
    revision: str | None = None
    repo_type: str = "model"
    checksum: str = ""

    def describe(self) -> str:
        """E.g. "huggingface.co/Intel/dpt-hybrid-midas" or the URL."""
        if self.kind == "url":
            return self.location
        return f"huggingface.co/{'spaces/' if self.repo_type == 'space' else ''}{self.location}"


@dataclass(frozen=True)
class ModelSpec:
    """One model file or folder a backend reads: where it lives, what makes it whole, where it comes from.

    Attributes:
        name: e.g. "dpt-hybrid-midas" (what `models pull` also accepts).
        stage, backend: who needs it (the first backend; `backends.BACKENDS` says who else uses it).
        path: where it lives under `paths.models`.
        kind: "file" or "dir" (a snapshot folder).
        required: "dir": the files that must be there (each ``"a|b"``: either), non-empty; a folder without
            its weights never counts as present.
        sources: where to fetch it, tried in order.
        licence: the weights' terms.
        size: about how many bytes it takes when whole, for `models list` (never used to verify).
        sha256: file -> sha256 the publisher gives (""-keyed for a single file; for a hub file, its LFS sha256
            at the pinned revision); others are recorded at the first verified pull in the lock file.
        tensors: per weights file (its path under the model's folder) or per folder of weights files ("" for the
            model's own folder or a single file), tensor names its loader needs (matched as a suffix, so
            "text_model." or "state_dict." prefixes do not matter): a file of the right format without them
            (another model's weights, a stripped export) is not present.
    """

    name: str
    stage: str
    backend: str
    path: str
    kind: str
    sources: tuple[Source, ...]
    licence: Licence
    required: tuple[str, ...] = ()
    size: int | None = None
    sha256: tuple[tuple[str, str], ...] = ()
    tensors: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def tensors_of(self, required: str) -> tuple[str, ...]:
        """The tensor names the required file `required` (a path under the model's folder) must hold."""
        file = Path(required if self.kind == "dir" else self.path)
        if file.suffix not in (".safetensors", ".bin", ".ckpt", ".pt", ".pth"):
            return ()
        folder = file.parent.as_posix() if self.kind == "dir" else "."
        table = dict(self.tensors)
        return table.get(required, table.get("" if folder == "." else folder, ()))


APACHE = Licence("apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0")
MIT = Licence("mit", "MIT License", "https://opensource.org/license/mit")
RAIL = Licence("creativeml-openrail++-m", "CreativeML Open RAIL++-M (use restrictions: attachment A)",
               "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/LICENSE.md", restricted=True)
_CLIP_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
_REMBG = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
_SDXL_BASE_FILES = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                    *(f"{t}/{f}" for t in ("tokenizer", "tokenizer_2")
                      for f in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")),
                    *(f"{e}/{f}" for e in ("text_encoder", "text_encoder_2") for f in ("config.json", "model.fp16.safetensors")),
                    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors")

#: TRELLIS-image-large's four networks on the Gaussian path (pipeline.json names them; the mesh and radiance-field
#: decoders are not fetched), each a .json of constructor arguments and a .safetensors.
_TRELLIS_CKPTS = ("ckpts/ss_flow_img_dit_L_16l8_fp16", "ckpts/ss_dec_conv3d_16l8_fp16",
                  "ckpts/slat_flow_img_dit_L_64l8p2_fp16", "ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16")
_TRELLIS_FILES = ("pipeline.json", *(f"{c}.{ext}" for c in _TRELLIS_CKPTS for ext in ("json", "safetensors")))


def _same(*paths: str) -> tuple[tuple[str, str], ...]:
    return tuple((p, p) for p in paths)


#: Every model file a backend can use: the one table `models list`, `models pull` and `models verify` follow.
#: Revisions and sha256s are the hub's commit and its LFS sha256 of the file at that commit, as the hub's file
#: pages publish them; models without them (SyncDreamer, SDXL-Lightning's UNet, SDXL's VAE and configs) are
#: pinned by the lock file at their first verified pull.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("isnet-general-use", "segment", "rembg", "u2net/isnet-general-use.onnx", "file",
              (Source("url", _REMBG + "isnet-general-use.onnx", checksum="md5:fc16ebd8b0c10d971d3513d564d01e29"),),
              Licence("unstated", "not stated by its publishers (IS-Net / DIS code: Apache-2.0)",
                      "https://github.com/xuebinqin/DIS"), size=178_648_008),
    ModelSpec("u2net", "segment", "rembg", "u2net/u2net.onnx", "file",
              (Source("url", _REMBG + "u2net.onnx", checksum="md5:60024c5c889badc19c04ad937298a77b"),),
              Licence("apache-2.0", "Apache License 2.0 (the U-2-Net repository)",
                      "https://github.com/xuebinqin/U-2-Net/blob/master/LICENSE"), size=175_997_641),
    ModelSpec("syncdreamer-pretrain", "multiview", "syncdreamer", "syncdreamer/syncdreamer-pretrain.ckpt", "file",
              (Source("hf", "liuyuan-pal/SyncDreamer", (("ckpt/syncdreamer-pretrain.ckpt", ""),), repo_type="space"),
               Source("hf", "camenduru/SyncDreamer", (("syncdreamer-pretrain.ckpt", ""),))),
              Licence("unstated", "not stated for the weights (SyncDreamer's code: MIT)",
                      "https://github.com/liuyuan-pal/SyncDreamer"), size=5_570_000_000,
              tensors=(("", ("cc_projection.weight", "model.diffusion_model.time_embed.0.weight")),)),
    ModelSpec("clip-vit-l-14", "multiview", "syncdreamer", "syncdreamer/ViT-L-14.pt", "file",
              (Source("url", f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA256}/ViT-L-14.pt",
                      checksum=f"sha256:{_CLIP_SHA256}"),),
              Licence("mit", "MIT License (OpenAI CLIP)", "https://github.com/openai/CLIP/blob/main/LICENSE"),
              size=932_768_134, sha256=(("", _CLIP_SHA256),)),
    ModelSpec("trellis-image-large", "multiview", "trellis", "trellis/TRELLIS-image-large", "dir",
              (Source("hf", "microsoft/TRELLIS-image-large", _same(*_TRELLIS_FILES),
                      revision="25e0d31ffbebe4b5a97464dd851910efc3002d96"),),
              Licence("mit", "MIT License (TRELLIS code and weights)",
                      "https://huggingface.co/microsoft/TRELLIS-image-large"),
              required=_TRELLIS_FILES, size=2_630_000_000,
              tensors=((f"{_TRELLIS_CKPTS[0]}.safetensors", ("pos_emb", "blocks.0.self_attn.to_qkv.weight")),
                       (f"{_TRELLIS_CKPTS[1]}.safetensors", ("input_layer.weight", "out_layer.2.weight")),
                       (f"{_TRELLIS_CKPTS[2]}.safetensors", ("input_blocks.0.conv1.conv.weight",
                                                             "out_blocks.0.conv2.conv.weight")),
                       (f"{_TRELLIS_CKPTS[3]}.safetensors", ("offset_perturbation", "out_layer.weight")))),
    ModelSpec("dinov2-vitl14-reg", "multiview", "trellis", "trellis/dinov2_vitl14_reg4_pretrain.pth", "file",
              (Source("url", "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"),),
              Licence("apache-2.0", "Apache License 2.0 (DINOv2 code and weights)",
                      "https://github.com/facebookresearch/dinov2/blob/main/LICENSE"), size=1_220_000_000,
              tensors=(("", ("register_tokens", "blocks.0.ls2.gamma")),)),
    ModelSpec("dpt-hybrid-midas", "depth", "dpt", "depth/dpt-hybrid-midas", "dir",
              (Source("hf", "Intel/dpt-hybrid-midas",
                      _same("config.json", "preprocessor_config.json", "pytorch_model.bin"),
                      revision="11eaf7a1cf4bd70740697dbc216f98980c0aeb03"),),
              APACHE, required=("config.json", "preprocessor_config.json", "pytorch_model.bin|model.safetensors"),
              size=489_648_389,
              sha256=(("pytorch_model.bin", "b6c4d44f9d96ca3fa76dd3bbb153989a60b4ad5526559f3c598562a368d687ec"),),
              tensors=(("", ("dpt.embeddings.cls_token", "head.head.0.weight")),)),
    ModelSpec("sdxl-base", "enhance", "sdxl_lightning", "enhance/sdxl-base", "dir",
              (Source("hf", "stabilityai/stable-diffusion-xl-base-1.0", _same(*_SDXL_BASE_FILES),
                      revision="462165984030d82259a11f4367a4eed129e94a7b"),), RAIL,
              required=("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer_2/vocab.json",
                        "tokenizer_2/merges.txt", "text_encoder/config.json",
                        "text_encoder/model.fp16.safetensors|text_encoder/model.safetensors",
                        "text_encoder_2/config.json",
                        "text_encoder_2/model.fp16.safetensors|text_encoder_2/model.safetensors", "vae/config.json",
                        "vae/diffusion_pytorch_model.fp16.safetensors|vae/diffusion_pytorch_model.safetensors"),
              size=1_800_000_000,
              sha256=(("text_encoder/model.fp16.safetensors",
                       "660c6f5b1abae9dc498ac2d21e1347d2abdb0cf6c0c0c8576cd796491d9a6cdd"),
                      ("text_encoder_2/model.fp16.safetensors",
                       "ec310df2af79c318e24d20511b601a591ca8cd4f1fce1d8dff822a356bcdb1f4")),
              tensors=(("text_encoder", ("embeddings.token_embedding.weight",)),
                       ("text_encoder_2", ("embeddings.token_embedding.weight", "text_projection.weight")),
                       ("vae", ("encoder.conv_in.weight", "decoder.conv_out.weight")))),
    ModelSpec("sdxl-lightning-4step-unet", "enhance", "sdxl_lightning",
              "enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors", "file",
              (Source("hf", "ByteDance/SDXL-Lightning", (("sdxl_lightning_4step_unet.safetensors", ""),),
                      revision="c9a24f48e1c025556787b0c58dd67a091ece2e44"),),
              Licence("creativeml-openrail++-m", RAIL.name, "https://huggingface.co/ByteDance/SDXL-Lightning",
                      restricted=True), size=5_135_000_000,
              tensors=(("", ("conv_in.weight", "add_embedding.linear_1.weight")),)),
    ModelSpec("controlnet-depth-sdxl", "enhance", "sdxl_lightning", "enhance/controlnet-depth-sdxl", "dir",
              (Source("hf", "diffusers/controlnet-depth-sdxl-1.0",
                      _same("config.json", "diffusion_pytorch_model.fp16.safetensors"),
                      revision="17bb97973f29801224cd66f192c5ffacf82648b4"),),
              Licence("creativeml-openrail++-m", RAIL.name,
                      "https://huggingface.co/diffusers/controlnet-depth-sdxl-1.0", restricted=True),
              required=("config.json",
                        "diffusion_pytorch_model.fp16.safetensors|diffusion_pytorch_model.safetensors"),
              size=2_500_000_000,
              sha256=(("diffusion_pytorch_model.fp16.safetensors",
                       "66a6813e6bd7270ecfe68206a59ddd605a011ae85321188376605c66e0a4f303"),),
              tensors=(("", ("controlnet_cond_embedding.conv_in.weight", "controlnet_mid_block.weight")),)),
    ModelSpec("dinov2", "refine", "mvcrm", "refine/dinov2", "dir",
              (Source("hf", "timm/vit_small_patch14_dinov2.lvd142m", _same("config.json", "model.safetensors"),
                      revision="4610ca143709d58a633b6397a74412c2c3842454"),),
              APACHE, required=("config.json", "model.safetensors"), size=88_240_510,
              sha256=(("model.safetensors", "04d27f3400d059fc0cfd7d17dd1909a75bf3ea8fb3eeb48b97cb99e57ee20081"),),
              tensors=(("", ("cls_token", "patch_embed.proj.weight")),)),
)
MODEL_BY_NAME: dict[str, ModelSpec] = {m.name: m for m in MODELS}
#: The model files each backend needs or uses when present, by name in the table above (from the registry).
BACKEND_MODELS: dict[str, tuple[str, ...]] = {b.name: models_of(b.name) for b in BACKENDS if models_of(b.name)}


@dataclass(frozen=True)
class ModelStatus:
    """One model a backend reads, as it is on disk now.

    Attributes:
        stage: pipeline stage, e.g. "segment".
        backend: backend name, e.g. "rembg".
        name: the model, e.g. "isnet-general-use".
        path: where it is (when present) or is expected; None when `models_dir` is not set.
        present: True when the file, or every required file of a snapshot folder, is there and `readable`.
        kind: "file" or "dir" (a Hugging Face snapshot directory).
        source: where it comes from (the first source).
        licence: the licence's id (`spec().licence` has the rest).
    """

    stage: str
    backend: str
    name: str
    path: Path | None
    present: bool
    kind: str
    source: str
    licence: str = ""

    def spec(self) -> ModelSpec:
        """Its line in `MODELS`."""
        return MODEL_BY_NAME[self.name]

    def error(self) -> ModelNotAvailable:
        """The error a backend raises when this model is missing."""
        if self.path is None:
            return ModelNotAvailable(self.stage, self.backend, f"<models_dir>/{self.spec().path}", self.source)
        absent = missing_files(self.spec(), self.path)
        where = (f"{self.path}/{absent[0].split('|')[0]}" if self.kind == "dir" and self.path.is_dir() and absent
                 else str(self.path))                       # an incomplete folder: its first missing file
        return ModelNotAvailable(self.stage, self.backend, where, self.source)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"stage": self.stage, "backend": self.backend, "name": self.name,
                "path": None if self.path is None else str(self.path), "present": self.present,
                "kind": self.kind, "source": self.source, "licence": self.licence}


def resolve_models_dir(models_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where a library call looks for model files: `models_dir` when given, else ``$GLIMPSED_MODELS_DIR``,
    else ``~/.cache/glimpsed/models`` (the daemon passes its `paths.models`)."""
    env = os.environ if env is None else env
    if models_dir is not None:
        return Path(models_dir).expanduser()
    if env.get("GLIMPSED_MODELS_DIR"):
        return Path(env["GLIMPSED_MODELS_DIR"]).expanduser()
    return Path("~/.cache/glimpsed/models").expanduser()


def model_status(name: str, models_dir: str | Path | None = None) -> ModelStatus:
    """The `ModelStatus` of one planned model (by `name`, e.g. "dpt-hybrid-midas") under `resolve_models_dir`.

    Raises:
        KeyError: `name` is not a planned model.
    """
    if name not in MODEL_BY_NAME:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_BY_NAME)}")
    return next(m for m in model_inventory(resolve_models_dir(models_dir)) if m.name == name)


def model_inventory(models_dir: Path | None, env: Mapping[str, str] | None = None) -> list[ModelStatus]:
    """List the models the backends read and whether each is on disk.

    rembg models are also looked for where rembg itself looks: ``$U2NET_HOME``,
    else ``~/.u2net``.

    Args:
        models_dir: the daemon's model directory, or None when not configured.
        env: environment to read U2NET_HOME from (default: `os.environ`).

    Returns:
        One `ModelStatus` per model, in pipeline order.
    """
    env = os.environ if env is None else env
    root = Path(models_dir).expanduser() if models_dir is not None else None
    u2net_home = Path(env["U2NET_HOME"]).expanduser() if env.get("U2NET_HOME") else Path("~/.u2net").expanduser()
    out = []
    for m in MODELS:
        candidates = [root / m.path] if root is not None else []
        if m.backend == "rembg":
            candidates.append(u2net_home / Path(m.path).name)
        found = next((c for c in candidates if is_whole(m, c)), None)
        path = found or (candidates[0] if candidates else None)
        out.append(ModelStatus(m.stage, m.backend, m.name, path, found is not None, m.kind, m.sources[0].describe(),
                               m.licence.id))
    return out


#: `readable`'s answers by (path, size, mtime_ns, tensors): a file is read once per version; later jobs only
#: stat it.
_READABLE: dict[tuple[str, int, int, tuple[str, ...]], bool] = {}


def readable(path: Path, tensors: tuple[str, ...] = ()) -> bool:
    """Whether `path` is there, its format's frame is whole and it names the `tensors` its loader needs, cheaply
    (no tensor is read and no pickle is run): a JSON object; a safetensors header whose tensors all lie inside
    the file; a torch zip archive with its central directory (names read from its pickle's strings) or a
    legacy pickle's protocol byte; anything else not empty. A truncated download or a weightless stub fails.

    Remembered per file version (path, size, mtime), so a warm worker's jobs open no model file."""
    try:
        st = path.stat()
    except OSError:
        return False
    if not path.is_file() or st.st_size == 0:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns, tensors)
    if key not in _READABLE:
        if len(_READABLE) > 4096:
            _READABLE.clear()
        names = _tensor_names(path, st.st_size)
        _READABLE[key] = names is not None and all(
            any(n == t or n.endswith("." + t) for n in names) for t in tensors)
    return _READABLE[key]


def _tensor_names(path: Path, size: int) -> set[str] | None:
    """The names a whole weights file holds (empty for other formats and legacy pickles); None: not whole."""
    try:
        if path.suffix == ".json":
            return set() if isinstance(json.loads(path.read_text(encoding="utf-8")), dict) else None
        if path.suffix == ".safetensors":
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if not 2 <= n <= min(size - 8, 100 * 2**20):
                    return None
                header = json.loads(f.read(n))
            ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
            return set(header) - {"__metadata__"} if 8 + n + max(ends, default=0) <= size else None
        if path.suffix in (".bin", ".ckpt", ".pt", ".pth"):
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    pkl = next((i for i in archive.namelist() if i.endswith("/data.pkl") or i == "data.pkl"), None)
                    # The pickle's strings, listed by pickletools (which runs nothing): state-dict keys among them.
                    return set() if pkl is None else {
                        arg for op, arg, _ in pickletools.genops(archive.read(pkl)) if isinstance(arg, str)}
            with open(path, "rb") as f:                 # legacy: magic, protocol, sys info, then the object
                if f.read(1) != b"\x80":
                    return None
                f.seek(0)
                return {arg for _ in range(4) for op, arg, _ in pickletools.genops(f) if isinstance(arg, str)}
        return set()
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
        return None


def required_files(spec: ModelSpec, path: Path) -> list[Path | None]:
    """Per required file of `spec` at `path`, the one that is there and `readable` (None: none of its choices)."""
    if spec.kind == "file":
        return [path if readable(path, spec.tensors_of("")) else None]
    out: list[Path | None] = []
    for choices in spec.required:
        found = [path / c for c in choices.split("|") if readable(path / c, spec.tensors_of(c))]
        out.append(found[0] if found else None)
    return out


def missing_files(spec: ModelSpec, path: Path) -> list[str]:
    """The required files of `spec` that are absent or unreadable at `path` (``"a|b"``: neither is there)."""
    return [c for c, f in zip(spec.required or ("",), required_files(spec, path)) if f is None]


def is_whole(spec: ModelSpec, path: Path) -> bool:
    """Whether the model's file, or every required file of its folder, is there and not empty."""
    return all(f is not None for f in required_files(spec, path))
