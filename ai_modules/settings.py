"""Pipeline settings: frozen dataclasses, one per stage, defaults in one place.

Importing this module is cheap (standard library only, no torch): the daemon
validates its `pipeline:` configuration section with `parse_settings` in a
light process, and shows the defaults with `default_settings`.

Each field carries its rule (kind, range or choices) and a one-line doc in its
dataclass metadata; `parse_settings` applies the rules and `settings_reference`
lists the docs (for the documented YAML). Values may be strings, as they come
from environment variables: "2" for 2, "true"/"false" for booleans, "ply,splat"
for a tuple.

Example:
    >>> s = parse_settings({"device": "cpu", "segment": {"size": "256"}})
    >>> s.segment.size
    256
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import backends
from .errors import SettingsError

#: The stages in pipeline order (`ai_modules.stages.STAGES` declares each: settings, inputs, class).
STAGE_NAMES: tuple[str, ...] = ("segment", "multiview", "depth", "reconstruct", "enhance", "refine", "export")
#: The embedded backend of each stage (needs no weights): what `auto` picks when no learned one is usable.
EMBEDDED_BACKENDS: dict[str, str] = {stage: backends.embedded(stage) for stage in STAGE_NAMES}
#: The learned backends of each stage; `auto` picks the first whose model files are on disk.
LEARNED_BACKENDS: dict[str, tuple[str, ...]] = {stage: backends.learned(stage) for stage in STAGE_NAMES
                                                if backends.learned(stage)}
#: Stages that may be switched off (`backend: none`): their output is their input.
OPTIONAL_STAGES: frozenset[str] = frozenset(stage for stage in STAGE_NAMES if backends.optional(stage))
#: Every format the export stage can write; `ExportSettings.formats` defaults to all but `splat_glb` (the Khronos
#: glTF validator does not know KHR_gaussian_splatting's attribute names yet).
EXPORT_FORMATS: tuple[str, ...] = ("ply", "splat", "glb", "splat_glb", "preview", "turntable")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _rule(kind: str, doc: str, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] = (), item: str = "") -> dict[str, Any]:
    return {"kind": kind, "doc": doc, "lo": lo, "hi": hi, "choices": choices, "item": item}


def backend_choices(stage: str) -> tuple[str, ...]:
    """The values `pipeline.<stage>.backend` accepts."""
    names = ("auto", EMBEDDED_BACKENDS[stage], *LEARNED_BACKENDS.get(stage, ()))
    return tuple(dict.fromkeys(names + (("none",) if stage in OPTIONAL_STAGES else ())))


def _backend(stage: str) -> Any:
    learned = LEARNED_BACKENDS.get(stage, ())
    doc = (f"`auto` or one of {', '.join(f'`{b}`' for b in backend_choices(stage)[1:])}; `auto` takes "
           + (f"`{learned[0]}` when its model files are present, else " if learned else "")
           + f"`{EMBEDDED_BACKENDS[stage]}`")
    return field(default="auto", metadata=_rule("choice", doc, choices=backend_choices(stage)))


@dataclass(frozen=True)
class SegmentSettings:
    """Settings of the `segment` stage (photo -> centred RGBA cutout)."""

    backend: str = _backend("segment")
    size: int = field(default=256, metadata=_rule("int", "side of the square cutout, pixels", lo=64, hi=2048))
    object_size: int = field(default=200, metadata=_rule(
        "int", "long side of the object inside the cutout, pixels (<= size)", lo=16, hi=2048))
    work_size: int = field(default=384, metadata=_rule(
        "int", "long side at which the colour model and GrabCut run, pixels", lo=64, hi=4096))
    border_fraction: float = field(default=0.03, metadata=_rule(
        "float", "width of the border band that samples the background, fraction of the long side", lo=0.005, hi=0.2))
    color_threshold: float = field(default=12.0, metadata=_rule(
        "float", "CIELAB distance from the background colours that counts as object (raised to 1.5x the "
        "border's own spread on textured backgrounds)", lo=1.0, hi=100.0))
    grabcut_iterations: int = field(default=4, metadata=_rule(
        "int", "GrabCut refinement iterations (0 = colour model only)", lo=0, hi=20))
    min_area_fraction: float = field(default=0.005, metadata=_rule(
        "float", "smallest object area accepted, fraction of the frame", lo=0.0, hi=0.5))
    max_area_fraction: float = field(default=0.98, metadata=_rule(
        "float", "largest object area accepted, fraction of the frame", lo=0.5, hi=1.0))


@dataclass(frozen=True)
class MultiviewSettings:
    """Settings of the `multiview` stage (cutout -> 16 views on SyncDreamer's ring + the input view)."""

    backend: str = _backend("multiview")
    input_elevation: float = field(default=30.0, metadata=_rule(
        "float", "elevation of the camera that took the photo, degrees (SyncDreamer's convention: 30)",
        lo=-10.0, hi=60.0))
    seed: int = field(default=6033, metadata=_rule("int", "random seed of the learned generator", lo=0, hi=2**31 - 1))
    steps: int = field(default=50, metadata=_rule("int", "`syncdreamer`: DDIM steps", lo=1, hi=1000))
    trellis_steps: int = field(default=0, metadata=_rule(
        "int", "`trellis`: steps of each of its two flow samplers; 0 = the published pipeline.json's (25)",
        lo=0, hi=500))
    cfg_scale: float = field(default=2.0, metadata=_rule(
        "float", "`syncdreamer`: classifier-free guidance scale", lo=1.0, hi=20.0))
    view_size: int = field(default=256, metadata=_rule(
        "int", "`relief`, `trellis`: side of the rendered ring views, pixels (SyncDreamer's are 256; the focal "
        "length scales with it)", lo=32, hi=1024))
    relief_size: int = field(default=0, metadata=_rule(
        "int", "`relief`: side at which the cutout becomes Gaussians (one per pixel, front and back); "
        "0 = auto: 192 on CUDA, 128 on the CPU (never more than the cutout's size)", lo=0, hi=2048))
    precision: str = field(default="auto", metadata=_rule(
        "choice", "`syncdreamer`, `trellis`: `auto` (SyncDreamer bf16 and TRELLIS its published fp16 on CUDA; "
        "fp32 on the CPU), `fp32`, `bf16` or `fp16`",
        choices=("auto", "fp32", "bf16", "fp16")))
    relief_thickness: float = field(default=0.5, metadata=_rule(
        "float", "`relief`: front-to-back thickness / silhouette width (1.0 turns a disc into a sphere)",
        lo=0.01, hi=2.0))
    extent: float = field(default=0.8, metadata=_rule(
        "float", "world length of the silhouette's long side (the world box is 1.0)", lo=0.05, hi=1.0))
    back_shade: float = field(default=0.9, metadata=_rule(
        "float", "brightness factor of the invented back side (1.0 = same colour as the front)", lo=0.0, hi=1.0))
    side_walls: bool = field(default=True, metadata=_rule(
        "bool", "add Gaussians along the silhouette rim that close the gap between front and back"))
    opacity: float = field(default=0.95, metadata=_rule("float", "opacity of every Gaussian", lo=0.01, hi=0.999))
    footprint: float = field(default=0.35, metadata=_rule(
        "float", "Gaussian standard deviation across the surface, in pixel footprints", lo=0.1, hi=3.0))
    flatness: float = field(default=0.1, metadata=_rule(
        "float", "Gaussian standard deviation along the surface normal / across it", lo=0.01, hi=1.0))


@dataclass(frozen=True)
class DepthSettings:
    """Settings of the `depth` stage (every view -> relative depth + confidence)."""

    backend: str = _backend("depth")
    thickness: float = field(default=0.5, metadata=_rule(
        "float", "`inflation`: front-to-back thickness / silhouette width", lo=0.01, hi=2.0))
    shading: float = field(default=0.0, metadata=_rule(
        "float", "`inflation`: how much the photo's shading modulates the height (brighter = nearer; 0 = off, "
        "0.2 = +-20 %)", lo=0.0, hi=1.0))
    confidence_ramp: float = field(default=0.1, metadata=_rule(
        "float", "`inflation`: distance from the rim at which confidence reaches 1, fraction of the object's long "
        "side", lo=0.001, hi=1.0))


@dataclass(frozen=True)
class ReconstructSettings:
    """Settings of the `reconstruct` stage (views + depth -> fitted Gaussians)."""

    backend: str = _backend("reconstruct")
    preset: str = field(default="draft", metadata=_rule(
        "choice", "fitting hyperparameters: `draft`, `standard` or `high` (ai_modules.reconstruct.PRESETS)",
        choices=("draft", "standard", "high")))
    iterations: int = field(default=0, metadata=_rule(
        "int", "optimisation steps; 0 = auto: from the relief 150 on CUDA and 60-250 on the CPU (fewer for more "
        "Gaussians), else the preset's",
        lo=0, hi=100_000))
    views_per_step: int = field(default=0, metadata=_rule(
        "int", "views rendered together in one step; 0 = auto: 4 on CUDA from the relief, else 1", lo=0, hi=64))
    size: int = field(default=256, metadata=_rule(
        "int", "side of the views the fit compares against, pixels", lo=32, hi=1024))
    input_weight: int = field(default=4, metadata=_rule(
        "int", "how many times the input photo's view counts against one generated view", lo=1, hi=32))
    densify: str = field(default="auto", metadata=_rule(
        "choice", "`auto` (none when starting from the relief, else the preset's), `default`, `mcmc` or `none`",
        choices=("auto", "default", "mcmc", "none")))
    depth_weight: float = field(default=0.05, metadata=_rule(
        "float", "weight of the scale- and shift-invariant depth term (0 = off; needs the depth stage)",
        lo=0.0, hi=10.0))


@dataclass(frozen=True)
class EnhanceSettings:
    """Settings of the `enhance` stage (renders of the fitted Gaussians -> enhanced views for `refine`)."""

    backend: str = _backend("enhance")
    size: int = field(default=256, metadata=_rule("int", "side of the rendered views, pixels", lo=64, hi=2048))
    detail: float = field(default=0.3, metadata=_rule(
        "float", "`classical`: unsharp-mask amount (0 = colour matching only)", lo=0.0, hi=2.0))
    prompt: str = field(default="a high quality photo of an object, detailed, sharp", metadata=_rule(
        "str", "`sdxl_lightning`: text prompt"))
    strength: float = field(default=0.4, metadata=_rule(
        "float", "`sdxl_lightning`: img2img strength (how far from the render)", lo=0.05, hi=1.0))
    seed: int = field(default=0, metadata=_rule("int", "`sdxl_lightning`: random seed", lo=0, hi=2**31 - 1))
    resolution: int = field(default=1024, metadata=_rule(
        "int", "`sdxl_lightning`: long side the views are diffused at (SDXL's native 1024), pixels", lo=64, hi=2048))


@dataclass(frozen=True)
class RefineSettings:
    """Settings of the `refine` stage (MVCRM: enhanced views back-projected into the Gaussians, where trusted)."""

    backend: str = _backend("refine")
    rounds: int = field(default=40, metadata=_rule(
        "int", "`mvcrm`: most back-projection rounds (cross-validation picks how many help)", lo=1, hi=200))
    relaxation: float = field(default=0.8, metadata=_rule(
        "float", "`mvcrm`: share of each Gaussian's mean trusted residual applied per round (SART's lambda)",
        lo=0.05, hi=1.9))
    prior: float = field(default=1.0, metadata=_rule(
        "float", "`mvcrm`: pull towards the fitted colour, in median Gaussian contributions (0: plain SART)",
        lo=0.0, hi=100.0))
    opacity_lr: float = field(default=0.03, metadata=_rule(
        "float", "`mvcrm`: Adam step on the opacity logits per round (0: opacity is not refined)", lo=0.0, hi=0.5))
    scale_lr: float = field(default=0.005, metadata=_rule(
        "float", "`mvcrm`: Adam step on the log scales per round (0: scales are not refined)", lo=0.0, hi=0.5))
    scale_trust: float = field(default=0.2, metadata=_rule(
        "float", "`mvcrm`: most change of a log scale from the fit's (0.2: x0.82..x1.22)", lo=0.0, hi=1.0))
    input_weight: float = field(default=4.0, metadata=_rule(
        "float", "`mvcrm`: weight of the photo's pixels against one enhanced view's", lo=0.0, hi=100.0))
    validation_every: int = field(default=4, metadata=_rule(
        "int", "`mvcrm`: every n-th enhanced view is left out to choose the rounds (0: run all rounds)", lo=0, hi=16))
    min_gain: float = field(default=0.01, metadata=_rule(
        "float", "`mvcrm`: relative drop of the left-out views' error that counts as a gain", lo=0.0, hi=0.5))
    agreement_tolerance: float = field(default=0.05, metadata=_rule(
        "float", "`mvcrm`: mean colour difference (0..1) of a 3x3 patch below which two views agree", lo=0.0,
        hi=1.0))
    agreement_neighbours: int = field(default=4, metadata=_rule(
        "int", "`mvcrm`: nearest other views each pixel is checked against (0: multi-view gate off)", lo=0, hi=15))
    depth_gate: bool = field(default=True, metadata=_rule(
        "bool", "`mvcrm`: check each enhanced view's monocular depth (needs the dpt-hybrid-midas files)"))
    depth_tolerance: float = field(default=0.1, metadata=_rule(
        "float", "`mvcrm`: allowed |aligned - rendered| depth, as a share of the view's depth range", lo=0.0,
        hi=1.0))
    feature_gate: bool = field(default=True, metadata=_rule(
        "bool", "`mvcrm`: check DINOv2 patch features of enhanced vs rendered (needs the dinov2 files)"))
    feature_threshold: float = field(default=0.6, metadata=_rule(
        "float", "`mvcrm`: least cosine similarity of a patch's DINOv2 features", lo=-1.0, hi=1.0))
    min_view_share: float = field(default=0.3, metadata=_rule(
        "float", "`mvcrm`: a view whose gates keep less than this share of its covered pixels is skipped", lo=0.0,
        hi=1.0))


@dataclass(frozen=True)
class ExportSettings:
    """Settings of the `export` stage (Gaussians -> files)."""

    backend: str = _backend("export")
    formats: tuple[str, ...] = field(default=("ply", "splat", "glb", "preview", "turntable"), metadata=_rule(
        "tuple", "files to write: any of ply, splat, glb (mesh), splat_glb (KHR_gaussian_splatting), preview, "
        "turntable", choices=EXPORT_FORMATS, item="str"))
    ply_sh_degree: int = field(default=3, metadata=_rule(
        "int", "SH degree of the .ply (higher coefficients are padded with zeros)", lo=0, hi=3))
    on_nonfinite: str = field(default="drop", metadata=_rule(
        "choice", "Gaussians with NaN/inf values: `drop` them (with a warning) or `error`", choices=("drop", "error")))
    preview_size: int = field(default=256, metadata=_rule("int", "side of one preview tile, pixels", lo=32, hi=2048))
    preview_azimuths: tuple[float, ...] = field(default=(0.0, 90.0, 180.0, 270.0), metadata=_rule(
        "tuple", "azimuths of the preview views, degrees (1 to 8 views)", lo=1, hi=8, item="float"))
    preview_elevation: float = field(default=30.0, metadata=_rule(
        "float", "elevation of the preview views, degrees", lo=-89.0, hi=89.0))
    mesh_views: int = field(default=8, metadata=_rule(
        "int", "views in the 30 deg ring rendered for the .glb mesh (plus half as many at -30 deg)", lo=4, hi=64))
    mesh_view_size: int = field(default=128, metadata=_rule(
        "int", "side of the views rendered for the .glb mesh, pixels", lo=32, hi=1024))
    mesh_voxels: int = field(default=128, metadata=_rule(
        "int", "TSDF cells per axis over the object box for the .glb mesh", lo=32, hi=256))
    mesh_max_faces: int = field(default=50_000, metadata=_rule(
        "int", "face budget of the .glb mesh after decimation", lo=1000, hi=1_000_000))
    mesh_colours: str = field(default="vertex", metadata=_rule(
        "choice", "colours of the .glb mesh: `vertex` colours, or a `texture` baked into an xatlas atlas",
        choices=("vertex", "texture")))
    texture_size: int = field(default=1024, metadata=_rule(
        "int", "side of the baked texture, pixels (with `mesh_colours: texture`)", lo=256, hi=4096))
    texture_view_size: int = field(default=256, metadata=_rule(
        "int", "side of the views rendered to bake the texture from, pixels", lo=64, hi=2048))
    texture_max_faces: int = field(default=20_000, metadata=_rule(
        "int", "face budget of a textured mesh (UV unwrapping time grows faster than the face count)",
        lo=1000, hi=1_000_000))
    turntable_frames: int = field(default=16, metadata=_rule(
        "int", "frames of the turntable animation (one turn)", lo=2, hi=120))
    turntable_size: int = field(default=192, metadata=_rule(
        "int", "side of the turntable frames, pixels", lo=32, hi=1024))
    turntable_elevation: float = field(default=20.0, metadata=_rule(
        "float", "elevation of the turntable camera, degrees", lo=-89.0, hi=89.0))


@dataclass(frozen=True)
class PipelineSettings:
    """All pipeline settings (the daemon's `pipeline:` section)."""

    device: str = field(default="auto", metadata=_rule("device", "`auto`, `cpu`, `cuda` or `cuda:N`"))
    low_memory: bool = field(default=False, metadata=_rule(
        "bool", "run every learned stage in its low-memory form from the start (SyncDreamer in 2-view chunks with "
        "CLIP/VAE moved in only while used, SDXL with sequential CPU offload and VAE slicing, one view per fit step): "
        "slower, ~5 GB peak; without it a stage that runs out of GPU memory is retried once in that form"))
    segment: SegmentSettings = field(default_factory=SegmentSettings)
    multiview: MultiviewSettings = field(default_factory=MultiviewSettings)
    depth: DepthSettings = field(default_factory=DepthSettings)
    reconstruct: ReconstructSettings = field(default_factory=ReconstructSettings)
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    export: ExportSettings = field(default_factory=ExportSettings)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain nested dict (tuples as lists), JSON/YAML ready."""
        return _plain(dataclasses.asdict(self))


_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(PipelineSettings)  # type: ignore[misc]
                               if f.name in STAGE_NAMES}
#: The settings outside the stages' sections.
_TOP_LEVEL: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PipelineSettings) if f.name not in STAGE_NAMES)


def default_settings() -> dict[str, Any]:
    """Return the defaults as a plain nested dict (for `config show` and the documented YAML)."""
    return PipelineSettings().to_dict()


def settings_reference() -> list[dict[str, Any]]:
    """List every setting as ``{"key": "pipeline.segment.size", "default": 256, "doc": "..."}``."""
    defaults = default_settings()
    rows = [{"key": f"pipeline.{name}", "default": defaults[name], "doc": _meta(PipelineSettings, name)["doc"]}
            for name in _TOP_LEVEL]
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append({"key": f"pipeline.{section}.{f.name}", "default": defaults[section][f.name],
                         "doc": f.metadata["doc"]})
    return rows


def parse_settings(mapping: Mapping[str, Any] | PipelineSettings | None) -> PipelineSettings:
    """Validate a (possibly partial) nested mapping and merge it over the defaults.

    Args:
        mapping: the `pipeline:` section, e.g. ``{"device": "cpu", "segment": {"size": 256}}``.
            A `PipelineSettings` is returned as is; None means all defaults.

    Returns:
        The frozen settings.

    Raises:
        SettingsError: unknown key, wrong type or out-of-range value; names the dotted key.
    """
    if isinstance(mapping, PipelineSettings):
        return mapping
    if mapping is None:
        return PipelineSettings()
    _check_mapping("pipeline", mapping)
    _check_keys("pipeline", mapping, (*_TOP_LEVEL, *_SECTIONS))
    kwargs: dict[str, Any] = {name: _coerce(f"pipeline.{name}", mapping[name], _meta(PipelineSettings, name))
                              for name in _TOP_LEVEL if name in mapping}
    for section, cls in _SECTIONS.items():
        if section in mapping:
            kwargs[section] = _parse_section(f"pipeline.{section}", mapping[section], cls)
    settings = PipelineSettings(**kwargs)
    if settings.segment.object_size > settings.segment.size:
        raise SettingsError("pipeline.segment.object_size",
                            f"<= `pipeline.segment.size` ({settings.segment.size})", settings.segment.object_size)
    return settings


def _parse_section(prefix: str, value: Any, cls: type) -> Any:
    if value is None:
        return cls()
    _check_mapping(prefix, value)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(prefix, value, tuple(fields))
    return cls(**{k: _coerce(f"{prefix}.{k}", v, fields[k].metadata) for k, v in value.items()})


def _check_mapping(key: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise SettingsError(key, "a mapping", value)


def _check_keys(prefix: str, mapping: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for k in mapping:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise SettingsError(f"{prefix}.{k}", f"one of the known keys ({', '.join(known)})",
                                got=f"an unknown key{hint}")


def _meta(cls: type, name: str) -> Any:
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def _coerce(key: str, value: Any, rule: Mapping[str, Any]) -> Any:
    kind = rule["kind"]
    if kind == "bool":
        return _to_bool(key, value)
    if kind in ("int", "float"):
        return _in_range(key, _to_number(key, value, kind), rule)
    if kind == "choice":
        text = value.strip() if isinstance(value, str) else value
        if text not in rule["choices"]:
            raise SettingsError(key, "one of " + ", ".join(f"`{c}`" for c in rule["choices"]), value)
        return text
    if kind == "str":
        if not isinstance(value, str) or len(value) > 1000:
            raise SettingsError(key, "a string of at most 1000 characters", value)
        return value
    if kind == "device":
        if not isinstance(value, str) or not _DEVICE.match(value.strip()):
            raise SettingsError(key, "`auto`, `cpu`, `cuda` or `cuda:N`", value)
        return value.strip()
    return _to_tuple(key, value, rule)


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingsError(key, "a boolean (true/false)", value)


def _to_number(key: str, value: Any, kind: str) -> float | int:
    expectation = "an integer" if kind == "int" else "a number"
    if isinstance(value, bool):
        raise SettingsError(key, expectation, value)
    if isinstance(value, str):
        try:
            value = int(value.strip()) if kind == "int" else float(value.strip())
        except ValueError:
            raise SettingsError(key, expectation, value) from None
    if kind == "int" and isinstance(value, int):
        return value
    if kind == "float" and isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
        return float(value)
    raise SettingsError(key, expectation, value)


def _in_range(key: str, value: float | int, rule: Mapping[str, Any]) -> float | int:
    lo, hi = rule["lo"], rule["hi"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        noun = "an integer" if rule["kind"] == "int" else "a number"
        raise SettingsError(key, f"{noun} in [{lo}, {hi}]", value)
    return value


def _to_tuple(key: str, value: Any, rule: Mapping[str, Any]) -> tuple[Any, ...]:
    items = [s for s in value.split(",") if s.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise SettingsError(key, "a list (or a comma-separated string)", value)
    lo, hi = int(rule["lo"] or 1), int(rule["hi"] or len(rule["choices"]))
    if not lo <= len(items) <= hi:
        raise SettingsError(key, f"a list of {lo} to {hi} items", value)
    if rule["item"] == "float":
        return tuple(float(_to_number(f"{key}[{i}]", v, "float")) for i, v in enumerate(items))
    out = tuple(v.strip() if isinstance(v, str) else v for v in items)
    for i, v in enumerate(out):
        if v not in rule["choices"]:
            raise SettingsError(f"{key}[{i}]", "one of " + ", ".join(f"`{c}`" for c in rule["choices"]), v)
    if len(set(out)) != len(out):
        raise SettingsError(key, "a list without repeats", value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
