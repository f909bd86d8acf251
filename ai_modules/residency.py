"""Which loaded models stay on the GPU between jobs: all of them while they fit a budget, else the most
recently used, the others moved to CPU memory (from where moving back is far cheaper than a load).

Each learned backend registers its loaded model with the bytes it takes on the device and two
callables that move it in and out; before a stage runs, `acquire` makes room for its model by
moving the least recently used others out, then moves it in. Models in a low-memory form manage
their own placement (offload hooks, or `on_device` around each network's use) and register with
0 bytes. On the CPU nothing moves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
GiB = 2**30
#: `auto` keeps this much of the card's free memory out of the budget, for the stages' activations.
AUTO_MARGIN_FRACTION = 0.25
AUTO_MARGIN_MIN = 4 * GiB


@dataclass
class _Entry:
    nbytes: int
    move_in: Callable[[], None]
    move_out: Callable[[], None]
    resident: bool = False
    used: int = 0


class Residency:
    """The models of one pipeline on one device, kept within `budget` bytes of device memory.

    Args:
        device: the pipeline's device; on "cpu" models are always "resident" and never move.
        budget: bytes of device memory models may keep between jobs; None = `auto_budget(device)`.
    """

    def __init__(self, device: str, budget: int | None = None) -> None:
        self.device = device
        self.on_gpu = device.startswith("cuda")
        self.budget = budget if budget is not None else auto_budget(device)
        self._entries: dict[str, _Entry] = {}
        self._clock = 0
        self.moves: list[str] = []

    def register(self, name: str, nbytes: int, move_in: Callable[[], None], move_out: Callable[[], None],
                 resident: bool = True) -> None:
        """Track a freshly loaded model (`resident`: it was loaded straight onto the device)."""
        self._entries[name] = _Entry(nbytes, move_in, move_out, resident and self.on_gpu)

    def forget(self, name: str) -> None:
        """Stop tracking a model (it is being released)."""
        self._entries.pop(name, None)

    def acquire(self, name: str) -> None:
        """Put model `name` on the device (a fresh load is there already), first moving the least recently used
        others to the CPU while they and it would exceed the budget."""
        entry = self._entries.get(name)
        if entry is None:
            return
        self._clock += 1
        entry.used = self._clock
        if not self.on_gpu:
            return
        others = sorted((e.used, n) for n, e in self._entries.items() if e.resident and n != name)
        while others and self.resident_bytes() + (0 if entry.resident else entry.nbytes) > self.budget:
            _, victim = others.pop(0)
            self._move_out(victim, f"to make room for {name}")
        if not entry.resident:
            entry.move_in()
            entry.resident = True
            self.moves.append(f"{name} moved to {self.device}")

    def release_all_but(self, name: str) -> None:
        """Move every other model off the device (before a stage retries in its low-memory form)."""
        for other, entry in self._entries.items():
            if other != name and entry.resident and self.on_gpu:
                self._move_out(other, f"after {name} ran out of memory")

    def resident_bytes(self) -> int:
        """Bytes of the models now on the device."""
        return sum(e.nbytes for e in self._entries.values() if e.resident)

    def take_moves(self) -> list[str]:
        """What moved since the last call (for the stage record), oldest first."""
        moves, self.moves = self.moves, []
        return moves

    def state(self) -> dict[str, Any]:
        """Budget and residents, for records and logs."""
        return {"budget_gib": round(self.budget / GiB, 2) if self.on_gpu else None,
                "resident": sorted(n for n, e in self._entries.items() if e.resident and self.on_gpu),
                "resident_gib": round(self.resident_bytes() / GiB, 2)}

    def _move_out(self, name: str, why: str) -> None:
        entry = self._entries[name]
        entry.move_out()
        entry.resident = False
        self.moves.append(f"{name} moved to cpu {why}")
        log.info("%s moved to cpu %s", name, why)


def auto_budget(device: str) -> int:
    """`worker.vram_budget: auto`: the card's free memory now, less a margin for activations (the larger of
    `AUTO_MARGIN_MIN` and `AUTO_MARGIN_FRACTION` of it); unlimited on the CPU."""
    if not device.startswith("cuda"):
        return 2**62
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(free - max(AUTO_MARGIN_MIN, int(free * AUTO_MARGIN_FRACTION)), 0)


def module_bytes(*modules: Any) -> int:
    """Bytes of the parameters and buffers of torch modules (what moving them to a device takes)."""
    total = 0
    for m in modules:
        if m is None:
            continue
        total += sum(t.numel() * t.element_size() for t in m.parameters())
        total += sum(t.numel() * t.element_size() for t in m.buffers())
    return total


@contextlib.contextmanager
def on_device(module: Any, device: Any, enabled: bool = True) -> Iterator[Any]:
    """A torch module kept in CPU memory (a low-memory form) with its weights on `device` for the block only.

    Inference only reads the weights, so nothing is copied back afterwards: the device copy is dropped and the
    CPU copy, untouched, is put back. On CUDA the CPU copy is page-locked on first use, from where copies to the
    card are faster and do not block the host (where page-locking fails, the moves go from pageable memory). With
    `enabled` False, or a device that is not CUDA, nothing moves. Not for modules that write their buffers.
    """
    import torch

    device = torch.device(device)
    if not enabled or device.type != "cuda":
        yield module
        return
    tensors = [*module.parameters(), *module.buffers()]
    _pin(tensors)
    home = [t.data for t in tensors]
    for t in tensors:
        t.data = t.data.to(device, non_blocking=True)
    try:
        yield module
    finally:
        for t, h in zip(tensors, home):
            t.data = h
        torch.cuda.empty_cache()


def _pin(tensors: list[Any]) -> None:
    """Page-lock the CPU tensors among `tensors` in place (their ``data``); where the host refuses, leave the rest."""
    for t in tensors:
        if t.device.type != "cpu" or t.is_pinned():
            continue
        try:
            t.data = t.data.pin_memory()
        except RuntimeError as err:  # the host would not lock more memory: the moves go from pageable memory
            log.warning("could not page-lock the weights (%s); moving them from pageable memory", err)
            return
