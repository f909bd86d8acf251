"""The TRELLIS golden vectors (``../shared/trellis``, made by the original code at a tiny config): where they are,
how to load them, and the issue's tolerances. Tests that use them skip cleanly when the folder is absent."""

from __future__ import annotations

import json

import pytest
import torch

from tests.shared_data import shared_dir

SHARED = shared_dir("trellis")
GOLDEN = SHARED / "golden"
SINGLE = 1e-4      # one evaluation: |a - b| <= 1e-4 * max(1, |b|)
SAMPLER = 2e-4     # sampler outputs (several evaluations chained)


def golden(name: str) -> dict[str, torch.Tensor]:
    """Every tensor of ``golden/<name>.safetensors`` (skips the test when the folder is absent)."""
    path = GOLDEN / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the TRELLIS golden vectors live in ../shared/trellis)")
    from safetensors.torch import load_file

    return load_file(str(path))


def meta() -> dict:
    """``golden/meta.json``: the tiny config, seeds, sampler parameters, normalisation vectors."""
    path = GOLDEN / "meta.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text())


def manifest(component: str) -> dict:
    """``manifest_<component>.json``: every key, shape and dtype of a published component."""
    path = SHARED / f"manifest_{component}.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text())


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = SINGLE, what: str = "") -> None:
    """|actual - expected| <= tol * max(1, |expected|) elementwise, and the same shape."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, b = actual.detach().double(), expected.detach().double()
    excess = (a - b).abs() - tol * b.abs().clamp(min=1.0)
    worst = float(excess.max()) if excess.numel() else 0.0
    assert worst <= 0, f"{what}: beyond tolerance by {worst:.3g} (max |diff| {float((a - b).abs().max()):.3g})"


def tiny(cls: type, component: str, state: str | None = None, **overrides: object) -> torch.nn.Module:
    """The tiny golden network `cls` built from meta.json's tiny config of `component`, in eval mode, with its
    seeded weights (``tiny_state_dict_<state or component>``) loaded strictly."""
    model = cls(**{**meta()["tiny_config"][component], **overrides}).eval()
    model.load_state_dict(golden(f"tiny_state_dict_{state or component}"), strict=True)
    return model


def assert_matches_manifest(model: torch.nn.Module, component: str) -> None:
    """`model` (built on the meta device at the published config) has the published component's state dict: every
    key in order, its shape, dtype and kind (parameter or buffer), and the parameter count; a strict load of
    tensors of those shapes works."""
    man = manifest(component)
    sd = model.state_dict()
    assert list(sd) == [e["key"] for e in man["keys"]] and len(sd) == man["num_keys"]
    buffers, params = dict(model.named_buffers()), dict(model.named_parameters())
    for entry in man["keys"]:
        key = entry["key"]
        assert list(sd[key].shape) == entry["shape"], key
        assert sd[key].dtype == getattr(torch, entry["dtype"]), key
        assert key in (buffers if entry["kind"] == "buffer" else params), key
    assert sum(p.numel() for p in params.values()) == man["num_parameters"]
    model.load_state_dict({e["key"]: torch.empty(e["shape"], dtype=getattr(torch, e["dtype"]), device="meta")
                           for e in man["keys"]}, strict=True, assign=True)
