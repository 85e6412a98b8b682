"""Which rows make up each optimizer batch: the two mixings of original and counterfactual rows.

``paired``: an epoch is one pass over the ORIGINAL rows.
Every optimizer batch holds ``G`` originals (``per_device_train_batch_size x
gradient_accumulation_steps x processes``) plus ``C = max(1, round(counterfactual_ratio x G))``
counterfactual rows, so both terms of ``L = lambda * L_kd + (1 - lambda) * L_cd`` are present in
every step and lambda means the same thing in each. Counterfactuals are added, never
substituted: the number of optimizer steps does not depend on how many there are.
Counterfactuals are chosen least-used first over the whole run, so each is seen about equally
often: none is drawn a second time before every one has been drawn once (when the run needs
more than there are, they are drawn again, round after round). Among equally-used ones, those
whose ``origin_id`` is one of the batch's originals come first, then those whose original has
already been trained on this epoch, then the rest in a seeded order. Inside the batch a
counterfactual goes to the micro-batch of its original when that micro-batch has room.

``uniform`` (the authors' released behaviour): originals and counterfactuals are rows of one
dataset, shuffled together; an epoch is one pass over ALL rows and each optimizer batch holds
``G`` rows of either kind.

In both, the last batch of an epoch is completed with rows from the start of the epoch's order
(as accelerate does for DDP), unless ``dataloader_drop_last`` drops it. The order is a pure
function of ``(seed, epoch)``, so a resumed run (which skips the batches already consumed)
sees the same batches as an uninterrupted one, and the rows a run trained on can be recounted
afterwards (:meth:`MixingBatchSampler.usage`).

The sampler yields every micro-batch of every process, step after step, in the order
``(accumulation step 0, process 0), (0, 1), ..., (1, 0), ...``; it has ``batch_size = None``, so
accelerate's ``BatchSamplerShard`` hands micro-batch ``k`` to process ``k % processes``. Each
process therefore trains on its share of the same global batch whatever the split, which keeps
the trainer's property that a step's loss does not depend on how the batch is divided.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterator, Sequence

import numpy as np

MIXINGS = ("paired", "uniform")
DEFAULT_MIXING = "uniform"  # the one place the default is set (DistillArguments.mixing uses it)
_ORIGINALS, _COUNTERFACTUALS, _ALL = 0, 1, 2  # salts of the per-epoch random streams

Step = tuple[list[int], list[int]]  # (original rows, counterfactual rows) of one optimizer batch


def counterfactuals_per_batch(ratio: float, originals_per_batch: int) -> int:
    """``C``: counterfactual rows added to an optimizer batch of ``originals_per_batch``."""
    return max(1, round(ratio * originals_per_batch))


class MixingBatchSampler:
    """Batches of dataset indices for :class:`leaf.distill.trainer.DistillTrainer`.

    ``is_counterfactual[i]`` and ``origins[i]`` describe dataset row ``i`` (``origins``: the
    original's id for an original, its ``origin_id`` for a counterfactual, ``None`` if unknown).
    ``per_device``: originals (paired) or rows (uniform) per micro-batch; ``micro_batches``:
    ``gradient_accumulation_steps x processes``.
    """

    batch_size = None  # batches have varying length (see the module docstring)
    drop_last = False  # the sampler completes or drops the last batch itself

    def __init__(
        self,
        is_counterfactual: Sequence[bool],
        origins: Sequence[str | None],
        mixing: str = DEFAULT_MIXING,
        per_device: int = 1,
        micro_batches: int = 1,
        counterfactual_ratio: float = 1.0,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        if per_device < 1 or micro_batches < 1:
            raise ValueError("per_device and micro_batches must be positive")
        self.mixing = mixing
        self.per_device = per_device
        self.micro_batches = micro_batches
        self.seed = seed
        self.originals = [i for i, cf in enumerate(is_counterfactual) if not cf]
        self.counterfactuals = [i for i, cf in enumerate(is_counterfactual) if cf]
        self.origins = list(origins)
        self.rows_per_step = per_device * micro_batches  # G
        if mixing == "paired":
            if not self.originals:
                raise ValueError("paired mixing needs original rows (an epoch is a pass over them)")
            self.cf_per_step = (counterfactuals_per_batch(counterfactual_ratio, self.rows_per_step)
                                if self.counterfactuals else 0)
            pool = len(self.originals)
        else:
            self.cf_per_step = 0
            pool = len(is_counterfactual)
        self.steps_per_epoch = (pool // self.rows_per_step if drop_last
                                else math.ceil(pool / self.rows_per_step))
        if self.steps_per_epoch == 0:
            raise ValueError(f"{pool} rows are fewer than one optimizer batch of "
                             f"{self.rows_per_step} with dataloader_drop_last")
        self.epoch = 0
        self._plans: list[list[Step]] = []
        self._picker = _CounterfactualPicker(self.counterfactuals, self.origins)

    # ---- the sampler protocol ----
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch * self.micro_batches

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.plan(self.epoch):
            yield from self.split(step)

    # ---- the plan of one epoch ----
    def _rng(self, epoch: int, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, salt])

    def _take(self, order: list[int], step: int) -> list[int]:
        """Rows ``step * G ...`` of ``order``, wrapping round to its start."""
        g = self.rows_per_step
        return [order[(step * g + j) % len(order)] for j in range(g)]

    def plan(self, epoch: int) -> list[Step]:
        """The optimizer batches of ``epoch``: ``(originals, counterfactuals)`` per step (under
        uniform the first list holds every row of the batch and the second is empty).

        Counterfactual usage carries over from one epoch to the next (a round that an epoch
        leaves unfinished is finished by the next), so epoch ``e``'s plan is computed after
        those of epochs ``0 .. e-1``: still a pure function of ``(seed, epoch)``."""
        while len(self._plans) <= epoch:
            self._plans.append(self._make_plan(len(self._plans)))
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> list[Step]:
        if self.mixing == "uniform":
            rows = self.originals + self.counterfactuals
            order = [rows[i] for i in self._rng(epoch, _ALL).permutation(len(rows))]
            return [(self._take(order, s), []) for s in range(self.steps_per_epoch)]
        order = [self.originals[i]
                 for i in self._rng(epoch, _ORIGINALS).permutation(len(self.originals))]
        steps = [self._take(order, s) for s in range(self.steps_per_epoch)]
        if not self.cf_per_step:
            return [(o, []) for o in steps]
        cf_order = [self.counterfactuals[i] for i in
                    self._rng(epoch, _COUNTERFACTUALS).permutation(len(self.counterfactuals))]
        self._picker.start_epoch(cf_order, [[self.origins[i] for i in o] for o in steps])
        return [(o, self._picker.pick(s, self.cf_per_step)) for s, o in enumerate(steps)]

    def split(self, step: Step) -> list[list[int]]:
        """One optimizer batch as ``micro_batches`` lists: ``per_device`` originals each (in
        order) and the counterfactuals spread as evenly as possible, each in the micro-batch of
        its original when that one has room."""
        originals, cfs = step
        m, b = self.micro_batches, self.per_device
        micro = [list(originals[j * b:(j + 1) * b]) for j in range(m)]
        room = [len(cfs) // m + (j < len(cfs) % m) for j in range(m)]
        home = {}
        for j, part in enumerate(micro):
            for i in part:
                home.setdefault(self.origins[i], j)
        placed = [[] for _ in range(m)]
        left = []
        for c in cfs:
            j = home.get(self.origins[c])
            if j is not None and room[j]:
                placed[j].append(c)
                room[j] -= 1
            else:
                left.append(c)
        j = 0
        for c in left:
            while not room[j]:
                j += 1
            placed[j].append(c)
            room[j] -= 1
        return [part + extra for part, extra in zip(micro, placed)]

    # ---- what a run trained on ----
    def usage(self, steps: int) -> Counter:
        """How often each dataset row is in the first ``steps`` optimizer batches of a run
        (epochs 0, 1, ... in turn, as the trainer consumes them)."""
        seen: Counter = Counter()
        for s in range(steps):
            originals, cfs = self.plan(s // self.steps_per_epoch)[s % self.steps_per_epoch]
            seen.update(originals)
            seen.update(cfs)
        return seen


class _CounterfactualPicker:
    """Counterfactual rows for the steps of paired epochs, least-used first.

    Rows are used in rounds: a round uses every counterfactual once, and the next begins only
    when the last one is exhausted (rounds run on across epochs). Within a round a step takes,
    in this order of preference, the rows of its own originals (one per original in turn),
    rows whose original came in an earlier step of the epoch (they can no longer be paired),
    then the others in the epoch's seeded order; a row already in the step is taken again only
    when every counterfactual is already in it.
    """

    def __init__(self, rows: list[int], origins: Sequence[str | None]) -> None:
        self.rows = rows
        self.origin = {c: origins[c] for c in rows}
        self.remaining: set[int] = set()
        self.order: list[int] = rows
        self.by_origin: dict[str | None, list[int]] = {}
        self.seen: set[str | None] = set()
        self.step_origins: list[list[str | None]] = []
        self.past: deque[int] = deque()
        self.future: deque[int] = deque()

    def start_epoch(self, order: list[int], step_origins: list[list[str | None]]) -> None:
        """``order``: the counterfactual rows in this epoch's seeded order; ``step_origins``: the
        origin ids of each step's originals."""
        self.order = order
        self.by_origin = {}
        for c in order:
            self.by_origin.setdefault(self.origin[c], []).append(c)
        upcoming = {o for step in step_origins for o in step}
        self.seen = {o for o in self.by_origin if o not in upcoming}  # no original: never paired
        self.step_origins = step_origins
        self._queues()

    def _queues(self) -> None:
        self.past = deque(c for c in self.order if c in self.remaining
                          and self.origin[c] in self.seen)
        self.future = deque(c for c in self.order if c in self.remaining
                            and self.origin[c] not in self.seen)

    def _new_round(self) -> None:
        self.remaining = set(self.rows)
        self._queues()

    def _first(self, queue: deque[int], avoid: set[int]) -> int | None:
        while queue and queue[0] not in self.remaining:
            queue.popleft()
        for c in queue:  # past the front only when the front is already in this step
            if c in self.remaining and c not in avoid:
                return c
        return None

    def pick(self, step: int, count: int) -> list[int]:
        own_origins = list(dict.fromkeys(self.step_origins[step]))
        lists = [self.by_origin.get(o, ()) for o in own_origins]  # one per original in turn
        own = [c for k in range(max(map(len, lists), default=0)) for cs in lists
               if k < len(cs) for c in (cs[k],)]
        chosen: list[int] = []
        in_step: set[int] = set()
        at = 0  # own[:at] are used, or already in this step
        while len(chosen) < count:
            if not self.remaining:
                self._new_round()
                at = 0
            avoid = in_step if len(in_step) < len(self.rows) else set()
            while at < len(own) and (own[at] not in self.remaining or own[at] in avoid):
                at += 1
            c = own[at] if at < len(own) else None
            if c is None:
                c = self._first(self.past, avoid)
            if c is None:
                c = self._first(self.future, avoid)
            if c is None:  # cannot happen: the round's rows are all in past or future
                raise RuntimeError("counterfactual picker found no row")
            chosen.append(c)
            in_step.add(c)
            self.remaining.discard(c)
        for o in own_origins:
            if o in self.by_origin and o not in self.seen:
                self.seen.add(o)
                self.past.extend(c for c in self.by_origin[o] if c in self.remaining)
        return chosen
