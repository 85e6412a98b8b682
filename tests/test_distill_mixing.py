"""The mixing batch sampler on its own (no model): what each optimizer batch holds, budgets,
determinism, placement of counterfactuals next to their originals, and the split over
gradient-accumulation steps and processes."""

from __future__ import annotations

from collections import Counter

import pytest
from accelerate.data_loader import BatchSamplerShard

from leaf.distill.mixing import MixingBatchSampler


def rows(n_originals: int, cfs_per_original: dict[int, int] | int = 0, orphans: int = 0):
    """``(is_counterfactual, origins)`` of a dataset: originals ``o0 ..``, then the
    counterfactuals of each (``cfs_per_original``: a count for all, or per original index),
    then counterfactuals whose original is not in the dataset."""
    is_cf = [False] * n_originals
    origins: list[str | None] = [f"o{i}" for i in range(n_originals)]
    per = cfs_per_original if isinstance(cfs_per_original, dict) else \
        dict.fromkeys(range(n_originals), cfs_per_original)
    for i, k in per.items():
        is_cf += [True] * k
        origins += [f"o{i}"] * k
    is_cf += [True] * orphans
    origins += [None] * orphans
    return is_cf, origins


def epoch_batches(sampler: MixingBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_paired_every_batch_holds_its_originals_and_a_fixed_number_of_counterfactuals():
    is_cf, origins = rows(10, {0: 2, 3: 1, 7: 1}, orphans=3)  # 7 counterfactuals
    s = MixingBatchSampler(is_cf, origins, "paired", per_device=2, micro_batches=2,
                           counterfactual_ratio=0.5, seed=0)
    assert s.rows_per_step == 4 and s.cf_per_step == 2 and s.steps_per_epoch == 3
    for epoch in range(3):
        plan = s.plan(epoch)
        assert len(plan) == 3
        for originals, cfs in plan:
            assert len(originals) == 4 and not any(is_cf[i] for i in originals)
            assert len(cfs) == 2 and all(is_cf[i] for i in cfs)
        # one pass over the originals: 12 slots for 10, the last batch completed from the start
        counts = Counter(i for o, _ in plan for i in o)
        assert set(counts) == set(range(10)) and sorted(counts.values()) == [1] * 8 + [2] * 2
        # micro-batches: 2 originals and 1 counterfactual each
        micro = epoch_batches(s, epoch)
        assert [sum(not is_cf[i] for i in m) for m in micro] == [2] * 6
        assert [sum(is_cf[i] for i in m) for m in micro] == [1] * 6


def test_step_count_does_not_depend_on_the_counterfactuals():
    lengths = set()
    for per in (0, 1, 5):
        for orphans in (0, 3):
            is_cf, origins = rows(13, per, orphans)
            s = MixingBatchSampler(is_cf, origins, "paired", per_device=3, micro_batches=2)
            lengths.add((s.steps_per_epoch, len(s)))
            assert all(len(o) == 6 for o, _ in s.plan(0))
    assert lengths == {(3, 6)}  # ceil(13 / 6) steps, 2 micro-batches each


def test_few_counterfactuals_are_drawn_again_evenly():
    is_cf, origins = rows(40, {5: 1, 17: 1, 30: 1})  # 3 counterfactuals, 4 wanted per step
    s = MixingBatchSampler(is_cf, origins, "paired", per_device=4, micro_batches=1,
                           counterfactual_ratio=1.0, seed=3)
    steps = 3 * s.steps_per_epoch
    for _, cfs in (s.plan(e)[k] for e in range(3) for k in range(s.steps_per_epoch)):
        assert len(cfs) == 4 and set(cfs) == {40, 41, 42}  # all three, then one again
    seen = s.usage(steps)
    cf_counts = [seen[i] for i in (40, 41, 42)]
    assert sum(cf_counts) == 4 * steps and max(cf_counts) - min(cf_counts) <= 1


def test_many_counterfactuals_are_each_used_once_before_any_again():
    is_cf, origins = rows(8, 3)  # 24 counterfactuals, 8 per epoch at ratio 1
    s = MixingBatchSampler(is_cf, origins, "paired", per_device=2, micro_batches=2, seed=1)
    for epochs in (1, 2, 3):
        counts = [s.usage(epochs * s.steps_per_epoch)[i] for i in range(8, 32)]
        assert sorted(set(counts)) == ([0, 1] if epochs < 3 else [1])


def test_counterfactuals_sit_next_to_their_originals():
    is_cf, origins = rows(12, 2)  # every original has two
    s = MixingBatchSampler(is_cf, origins, "paired", per_device=3, micro_batches=2, seed=0)
    for epoch in range(2):
        for step in s.plan(epoch):
            own = {origins[i] for i in step[0]}
            assert {origins[c] for c in step[1]} == own  # one for each original of the batch
        for micro in epoch_batches(s, epoch):  # and in the same micro-batch
            originals = {origins[i] for i in micro if not is_cf[i]}
            assert all(origins[i] in originals for i in micro if is_cf[i])
    # when only some originals have counterfactuals, those go first, the rest fill the batch
    is_cf, origins = rows(12, {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, orphans=20)
    s = MixingBatchSampler(is_cf, origins, "paired", per_device=4, micro_batches=1, seed=0)
    for originals, cfs in s.plan(0):
        paired = [c for c in cfs if origins[c] is not None]
        assert {origins[c] for c in paired} == {origins[i] for i in originals} & {
            f"o{k}" for k in range(6)}


def test_order_is_a_pure_function_of_seed_and_epoch():
    is_cf, origins = rows(10, {1: 2, 4: 1}, orphans=2)

    def sampler(seed, mixing="paired"):
        return MixingBatchSampler(is_cf, origins, mixing, per_device=2, micro_batches=2,
                                  counterfactual_ratio=0.5, seed=seed)

    for mixing in ("paired", "uniform"):
        a, b = sampler(7, mixing), sampler(7, mixing)
        through = [epoch_batches(a, e) for e in range(3)]
        assert epoch_batches(b, 2) == through[2]  # epoch 2 straight away, as on resume
        assert through[0] != through[1]
        assert [epoch_batches(sampler(8, mixing), e) for e in range(3)] != through


def test_uniform_epoch_is_one_pass_over_all_rows():
    is_cf, origins = rows(6, 1)  # 12 rows
    s = MixingBatchSampler(is_cf, origins, "uniform", per_device=2, micro_batches=2, seed=0,
                           counterfactual_ratio=3.0)  # ignored by uniform
    assert s.steps_per_epoch == 3 and s.cf_per_step == 0
    for epoch in range(2):
        batches = epoch_batches(s, epoch)
        assert [len(b) for b in batches] == [2] * 6
        assert sorted(i for b in batches for i in b) == list(range(12))


def test_drop_last_drops_the_incomplete_batch():
    is_cf, origins = rows(10, 1)
    s = MixingBatchSampler(is_cf, origins, "paired", per_device=4, drop_last=True)
    assert s.steps_per_epoch == 2
    with pytest.raises(ValueError, match="fewer than one optimizer batch"):
        MixingBatchSampler(is_cf, origins, "paired", per_device=16, drop_last=True)
    with pytest.raises(ValueError, match="needs original rows"):
        MixingBatchSampler([True], ["x"], "paired")


@pytest.mark.parametrize("mixing", ["paired", "uniform"])
def test_processes_share_one_global_batch_per_step(mixing):
    """Under accelerate's BatchSamplerShard each of 2 processes gets its micro-batches, and the
    micro-batches of one step (2 accumulation steps x 2 processes) make up the planned batch."""
    is_cf, origins = rows(9, {0: 1, 2: 2, 8: 1}, orphans=1)
    s = MixingBatchSampler(is_cf, origins, mixing, per_device=1, micro_batches=4, seed=5,
                           counterfactual_ratio=0.5)
    s.set_epoch(1)
    shards = [list(BatchSamplerShard(s, num_processes=2, process_index=p)) for p in range(2)]
    assert all(len(shard) == len(s) // 2 for shard in shards)
    for k, (originals, cfs) in enumerate(s.plan(1)):
        step = [b for shard in shards for b in shard[2 * k:2 * k + 2]]
        assert sorted(i for b in step for i in b) == sorted(originals + cfs)
        assert all(len(b) == 1 if mixing == "uniform" else sum(not is_cf[i] for i in b) == 1
                   for b in step)


@pytest.mark.parametrize("setting,match", [
    ({"mixing": "shuffled"}, "mixing must be one of"),
    ({"counterfactual_ratio": 0.0}, "counterfactual_ratio must be positive"),
    ({"train_sampling_strategy": "group_by_length"}, "train_sampling_strategy"),
])
def test_arguments_refuse_bad_mixing_settings(tmp_path, setting, match):
    from leaf.distill.config import DistillArguments

    assert DistillArguments(output_dir=str(tmp_path)).counterfactual_ratio == 1.0
    with pytest.raises(ValueError, match=match):
        DistillArguments(output_dir=str(tmp_path), use_cpu=True, **setting)
