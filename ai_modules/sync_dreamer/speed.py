"""Speed/memory choices that never change what is computed: autocast and view batching (the low-memory
form's moves are `ai_modules.residency.on_device`).

`auto_batch_view_num` sizes the view chunk from free VRAM with a per-view cost estimate. One
target view in a chunk costs its frustum volume (64 x 48 x 32 x 32 resampled and refined by
FrustumTV3DNet, kept in fp32), the depth-wise attention at the 32-wide level (k, v and the
q*k / v*attn products, 128 x 48 x 32 x 32 each, twice for CFG) and the UNet's own activations at
32x32 (small next to the former). Summed from the tensor sizes that is ~0.25 GB per view in
bf16 and ~0.5 GB in fp32; the constants below double that for allocator slack. The benchmark
prints the measured per-view cost so that they can be recalibrated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .config import VIEW_NUM, RunOptions

GIB = 1024 ** 3
PER_VIEW_BYTES = {torch.float32: 1 * GIB, torch.bfloat16: GIB // 2, torch.float16: GIB // 2}
RESERVE_BYTES = 2 * GIB        # spatial-volume pass, cuDNN workspaces, fragmentation


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype of a precision option: "auto" -> bf16 on CUDA (fp16 without bf16 support), fp32 elsewhere."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"`precision` must be one of auto, fp32, bf16, fp16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Turn TF32 off in CUDA matmuls and cuDNN for the block, restoring the settings after.

    PyTorch lets cuDNN convolutions use TF32 by default (10-bit mantissa), which is far outside
    the golden tolerance; the fp32 path must be IEEE fp32 to match the original. Uses the
    `allow_tf32` flags; if the process already uses the newer `fp32_precision` API (reading
    the old flags then raises), sets that instead, so the two APIs are never mixed by us.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        saved = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:
        nodes = [matmul, cudnn.conv, cudnn.rnn]
        saved_precision = [n.fp32_precision for n in nodes]
        try:
            for n in nodes:
                n.fp32_precision = "ieee"
            yield
        finally:
            for n, value in zip(nodes, saved_precision):
                n.fp32_precision = value
        return
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = False, False
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def precision_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The compute context: `torch.autocast` for bf16/fp16; for fp32, IEEE fp32 (no TF32) on CUDA, nothing on CPU."""
    if dtype == torch.float32:
        return ieee_fp32() if device.type == "cuda" else contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def auto_batch_view_num(free_bytes: int, dtype: torch.dtype) -> int:
    """Views per UNet call that fit in `free_bytes` of device memory (1..16), from `PER_VIEW_BYTES`."""
    per_view = PER_VIEW_BYTES.get(dtype, PER_VIEW_BYTES[torch.float32])
    return max(1, min(VIEW_NUM, (free_bytes - RESERVE_BYTES) // per_view))


def choose_batch_view_num(options: RunOptions, device: torch.device, dtype: torch.dtype) -> int:
    """The view chunk for a run: the option when it is a number; else low-memory's, else from free VRAM (16 on CPU)."""
    if options.batch_view_num != "auto":
        return int(options.batch_view_num)
    if options.low_memory:
        return options.low_memory_batch_view_num
    if device.type != "cuda":
        return VIEW_NUM
    free, _total = torch.cuda.mem_get_info(device)
    return auto_batch_view_num(free, dtype)
