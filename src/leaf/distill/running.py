"""Running means by name between two logging steps, averaged over processes where they differ."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

VALUE, WEIGHT = 0, 1


class RunningMeans:
    """``sum(value) / sum(weight)`` per name, summed since the last :meth:`take`.

    ``names`` fixes the names and the order they are reported in. Sums added with
    ``per_process=True`` (what each process computed from its own rows) are averaged over the
    processes when read; the others (from a step's global counts) are the same on every process
    and are read as they are. A name is reported only while its weight is positive.
    """

    def __init__(self, names: Sequence[str], device: Any = None) -> None:
        self.names = tuple(names)
        self.device = device
        self._sums: dict[tuple[str, int], torch.Tensor] = {}
        self._per_process: set[tuple[str, int]] = set()

    def add(self, values: Mapping[str, tuple[Any, Any]], *, per_process: bool = False) -> None:
        """Add ``{name: (value, weight)}`` to the sums (``None``: nothing to add to that one)."""
        for name, pair in values.items():
            if name not in self.names:
                raise KeyError(f"{name!r} is not one of {self.names}")
            for part, x in zip((VALUE, WEIGHT), pair):
                if x is None:
                    continue
                key = (name, part)
                if key not in self._sums:
                    self._sums[key] = torch.zeros((), device=self.device)
                self._sums[key] += torch.as_tensor(x).detach().to(self._sums[key].device)
                if per_process:
                    self._per_process.add(key)

    def take(self, mean_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> dict[str, float]:
        """The means (rounded to 6 decimals) by name, then start again from zero;
        ``mean_over_processes`` averages a tensor over the processes (None: one process)."""
        local = [(n, p) for n in self.names for p in (VALUE, WEIGHT) if (n, p) in self._per_process]
        if mean_over_processes is not None and local:  # one collective call for all of them
            averaged = mean_over_processes(torch.stack([self._sums[k] for k in local]))
            self._sums.update(zip(local, averaged))
        means = {}
        for name in self.names:
            weight = self._sums.get((name, WEIGHT))
            if weight is not None and weight > 0:
                value = self._sums.get((name, VALUE), torch.zeros_like(weight))
                means[name] = round((value / weight).item(), 6)
        self._sums.clear()
        self._per_process.clear()
        return means
