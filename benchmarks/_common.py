"""Shared helpers for the benchmarks: timing, peak memory, statistics, machine facts.

Timing: both sides run in one process on the same model and data, after a warm-up, in
interleaved order (A B, then B A, ...) so that load from other processes hits both sides.
Each repetition gives one time per side and one ratio; we report the median and the range.

Peak memory is measured in a fresh child process per (side, repetition):

- CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated just before the step
  (``reset_peak_memory_stats`` first).
- CPU: the process's peak resident set size (``VmHWM`` in ``/proc/self/status``) minus its
  resident size (``VmRSS``) just before the step, after resetting the peak with
  ``echo 5 > /proc/self/clear_refs`` (Linux >= 4.0). A fresh process has freed no big blocks
  yet, so allocator caching cannot hide allocations; a tiny warm-up call first pays the
  one-off lazy initialisations (kernels, thread pools) so they are not charged to the step.
  The child runs with ``MALLOC_MMAP_THRESHOLD_=131072``: glibc then maps every block of
  128 KiB or more on its own and returns it when freed (its threshold no longer grows), so
  the resident size follows the live tensors instead of the heap's high-water mark.
  Where ``clear_refs`` is refused, ``ru_maxrss`` is used instead and the row says so.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:  # this checkout's leaf, not an installed copy
    sys.path.insert(0, str(ROOT / "src"))


# ---------------------------------------------------------------- environment


def setup_torch(threads: int, device: str):
    """Import torch with a fixed thread count; return (torch, device)."""
    import torch

    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return torch, torch.device(device)


def sync(device) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def machine_info(device: str = "cpu", threads: int | None = None) -> dict:
    """Facts printed beside every table."""
    import torch
    import transformers

    from leaf.machine import cpu_name

    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------- models


def llama(vocab: int, hidden: int, layers: int, heads: int, intermediate: int, seed: int = 0,
          max_positions: int = 4096):
    """A randomly initialised Llama-architecture causal LM (float32; dropout 0 as in Llama)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- statistics


def summary(xs: list[float]) -> dict:
    """Median, min and max of a list."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s: dict, digits: int = 2) -> str:
    """``median [min-max]``."""
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def interleaved(sides: dict[str, Callable[[], None]], reps: int, device, warmup: int = 1,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Wall time of each side, ``reps`` times, order alternating every repetition. ``cpu``,
    when given, also receives each call's CPU time of this process (``time.process_time``: on
    a machine shared with other jobs it counts this process's own work, not the waits)."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            sides[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - c0)
    return times


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-repetition ratios ``num[i] / den[i]``."""
    return [a / b for a, b in zip(num, den)]


def ratio_line(values: dict[str, float]) -> str:
    return "RATIO " + " ".join(f"{k}={v:.3f}" for k, v in values.items())


# ---------------------------------------------------------------- peak memory (child side)


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


class PeakMemory:
    """Peak memory added by the code inside ``with`` (bytes, see the module docstring)."""

    def __init__(self, device) -> None:
        self.device = device
        self.method = ""
        self.peak = 0

    def __enter__(self):
        import gc

        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "cuda max_memory_allocated"
            return self
        self.base = _status()["VmRSS"]
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "peak RSS (VmHWM after clear_refs) - RSS before"
        except OSError:
            import resource

            self.method = "ru_maxrss - RSS before (clear_refs refused)"
            self._ru = resource
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif hasattr(self, "_ru"):
            self.peak = self._ru.getrusage(self._ru.RUSAGE_SELF).ru_maxrss * 1024 - self.base
        else:
            self.peak = _status()["VmHWM"] - self.base
        return False


def child_report(peak: PeakMemory, **extra) -> None:
    """Print a child's result as the last stdout line."""
    print("CHILD " + json.dumps({"peak_bytes": peak.peak, "method": peak.method, **extra}))


# ---------------------------------------------------------------- peak memory (parent side)


def run_child(script: str, args: list[str], timeout: float = 1200) -> dict:
    """Run ``python script --child ... args`` in a fresh process; return its CHILD json."""
    cmd = [sys.executable, str(script), *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    # glibc: serve every block >= 128 KiB with mmap and unmap it when freed (no dynamic
    # threshold), so the resident size follows the live tensors
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("CHILD "):
            return json.loads(line[6:])
    raise RuntimeError(f"child {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def mib(nbytes: float) -> float:
    return nbytes / 2**20
