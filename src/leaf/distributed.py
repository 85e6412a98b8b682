"""Data-parallel stage 1: which process this is, its GPUs, and progress over the whole job.

Launched by ``torchrun`` or ``accelerate launch`` (which set ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), every stage-1 function (screen, detect, prune with
verification, teacher-cache, eval) runs data-parallel: each rank takes a deterministic shard of
the samples, writes its own part file and rank 0 merges them (:mod:`leaf.data.rowjob`).
Without those variables everything here is a no-op and a stage is one process.

The ranks talk over a ``gloo`` process group (CPU tensors only: a barrier, a few counts), so the
same code runs on CPU-only machines and on GPU nodes. A barrier may wait as long as the slowest
rank's shard takes: its timeout is ``LEAF_DIST_TIMEOUT`` seconds (default 48 hours).

GPUs: when a node runs several ranks, each rank is given its own slice of the node's GPUs
(``CUDA_VISIBLE_DEVICES``, set before CUDA starts): with G GPUs and R ranks on the node, local
rank k gets GPUs ``[k*G/R, (k+1)*G/R)``, and ``device_map="auto"`` spreads its model copy over
them (2 ranks x 4 GPUs = two copies of a large model on one 8-GPU node). With fewer GPUs than
ranks, ranks share GPUs round-robin. Set ``LEAF_SPLIT_GPUS=0`` to leave
``CUDA_VISIBLE_DEVICES`` alone.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from leaf.errors import LeafError

__all__ = ["Ranks", "all_sum", "barrier", "close_bars", "init", "progress", "ranks"]

DEFAULT_TIMEOUT_S = 48 * 3600


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job (``world == 1``: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise LeafError(f"environment variable {name}={value!r}: expected an integer") from None


def ranks() -> Ranks:
    """The launcher's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise LeafError(f"RANK={rank} and WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return Ranks(rank, world, local_rank, max(local_world, 1))


_group: Any = None
_initialised = False


def _split_gpus(r: Ranks) -> None:
    """Give this rank its slice of the node's GPUs, before CUDA starts (see module doc)."""
    if r.local_world <= 1 or os.environ.get("LEAF_SPLIT_GPUS", "1") == "0":
        return
    import torch  # heavy: torch

    if torch.cuda.is_initialized():  # too late to choose: every rank sees every GPU
        import warnings

        warnings.warn("leaf: CUDA started before leaf.distributed.init(); ranks share all "
                      "GPUs (set CUDA_VISIBLE_DEVICES per rank yourself)", stacklevel=3)
        return
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        gpus = [g.strip() for g in env.split(",") if g.strip()]
    else:
        try:
            count = torch.cuda._device_count_nvml()  # does not start CUDA
        except Exception:  # noqa: BLE001 - no NVML: leave the GPUs alone
            return
        gpus = [str(i) for i in range(max(count, 0))]
    if not gpus:
        return
    k, n = r.local_rank, r.local_world
    if len(gpus) >= n:
        per = len(gpus) // n
        mine = gpus[k * per:(k + 1) * per]
    else:
        mine = [gpus[k % len(gpus)]]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)


def init() -> Ranks:
    """This process's :class:`Ranks`; under a launcher, also its GPUs and the process group.

    Call before anything touches CUDA. Safe to call again (later calls only return).
    """
    global _group, _initialised
    r = ranks()
    if not r.distributed or _initialised:
        return r
    import torch.distributed as dist  # heavy: torch

    _split_gpus(r)
    timeout = timedelta(seconds=_env_int("LEAF_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout)
    elif dist.get_backend() != "gloo":  # e.g. accelerate's NCCL group: counts travel on CPU
        _group = dist.new_group(backend="gloo", timeout=timeout)
    _initialised = True
    return r


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if init().distributed:
        import torch.distributed as dist  # heavy: torch

        dist.barrier(group=_group)


def all_sum(*counts: int) -> tuple[int, ...]:
    """``counts`` summed over every rank (as given, in a single process)."""
    if not init().distributed:
        return tuple(int(c) for c in counts)
    import torch  # heavy: torch
    import torch.distributed as dist  # heavy: torch

    t = torch.tensor([int(c) for c in counts], dtype=torch.int64)
    dist.all_reduce(t, group=_group)
    return tuple(int(v) for v in t.tolist())


# ---------------------------------------------------------------------------------------------
# progress over the whole job

_bar_counts: dict[str, int] = {}
_open_bars: list[_JobBar] = []


def _store():
    try:
        from torch.distributed import distributed_c10d  # heavy: torch

        return distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - no shared store: each rank shows its own bar
        return None


class _JobBar:
    """A progress bar over every rank's work: each rank adds its counts to the launcher's
    key-value store; rank 0 shows their sums (total and done) and keeps its bar open until
    the other ranks are done too (or the stage's closing barrier)."""

    def __init__(self, total: int, desc: str, unit: str, disable: bool | None) -> None:
        from tqdm.auto import tqdm  # heavy: tqdm

        self.r = init()
        n = _bar_counts.get(desc, 0)
        _bar_counts[desc] = n + 1
        self.key = f"leaf/progress/{desc}/{n}"
        self.store = _store()
        self.bar = None
        self._stop = threading.Event()
        self._thread = None
        if self.store is None:  # each rank shows its own share
            self.bar = tqdm(total=total, desc=f"{desc} [rank {self.r.rank}]", unit=unit,
                            disable=disable)
            return
        self.store.add(self.key + "/total", int(total))
        if self.r.main:
            self.bar = tqdm(total=total, desc=f"{desc} [{self.r.world} ranks]", unit=unit,
                            disable=disable)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _read(self) -> tuple[int, int]:
        return self.store.add(self.key + "/total", 0), self.store.add(self.key + "/done", 0)

    def _refresh(self) -> bool:
        try:
            total, done = self._read()
        except Exception:  # noqa: BLE001 - the store went away: stop showing
            return True
        self.bar.total = max(total, done)
        self.bar.n = done
        self.bar.refresh()
        return done >= total

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._refresh()

    def update(self, n: int = 1) -> None:
        if self.store is None:
            self.bar.update(n)
        else:
            self.store.add(self.key + "/done", int(n))

    def close(self, final: bool = False) -> None:
        if self.bar is None:
            return
        if self.store is not None and self._thread is not None:
            finished = self._refresh()
            if not finished and not final:  # other ranks are still at work: keep showing
                if self not in _open_bars:
                    _open_bars.append(self)
                return
            self._stop.set()
        self.bar.close()
        self.bar = None

    def __enter__(self) -> _JobBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int, desc: str, unit: str = "sample", disable: bool | None = False):
    """A tqdm-like bar (``update(n)``, ``close()``, a context manager) over the whole job:
    plain tqdm in a single process; under a launcher rank 0 shows every rank's counts summed."""
    if not init().distributed:
        from tqdm.auto import tqdm  # heavy: tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=disable)
    return _JobBar(total, desc, unit, disable)


def close_bars() -> None:
    """Close the bars rank 0 kept open for other ranks' work (after a barrier: all is done)."""
    while _open_bars:
        _open_bars.pop().close(final=True)
