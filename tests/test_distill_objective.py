"""The distillation objective (leaf.distill.objective) on its own: the term weights of both
mixings, absent groups, the cross-entropy term, coefficients that are the formula's gradient,
the hidden-state and logits paths giving the same loss and gradient, the step's counts, the
evaluation metrics and the running means the trainer logs; and the trainer's loss step fits
on a screen."""

from __future__ import annotations

import inspect
import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from leaf.distill.config import DistillArguments
from leaf.distill.objective import (
    CD,
    KD,
    DistillObjective,
    combine,
    count_targets,
    term_weights,
    token_coefficients,
)
from leaf.distill.running import RunningMeans
from leaf.distill.trainer import DistillTrainer
from leaf.errors import LeafError


def counts(kd: float, cd: float) -> torch.Tensor:
    return torch.tensor([kd, cd])


# ---- the formula ----
def test_term_weights_paired_and_uniform_with_absent_groups():
    assert term_weights(counts(3, 5), "paired", 0.3).tolist() == pytest.approx([0.3, 0.7])
    assert term_weights(counts(3, 5), "uniform", 0.3).tolist() == pytest.approx([3 / 8, 5 / 8])
    for mixing in ("paired", "uniform"):  # one kind only: that kind's mean, whatever lambda
        assert term_weights(counts(4, 0), mixing, 0.3).tolist() == [1.0, 0.0]
        assert term_weights(counts(0, 4), mixing, 0.3).tolist() == [0.0, 1.0]
        assert term_weights(counts(0, 0), mixing, 0.3).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("mixing", ["paired", "uniform"])
def test_combine_is_the_documented_formula(mixing):
    sums, ce, n = torch.tensor([6.0, 2.0]), torch.tensor(12.0), counts(3, 5)
    terms = combine(sums, ce, n, mixing, 0.3, 0.25)
    l_kd, l_cd = 6.0 / 3, 2.0 / 5
    distillation = 0.3 * l_kd + 0.7 * l_cd if mixing == "paired" else (6.0 + 2.0) / 8
    assert terms.loss_kd.item() == pytest.approx(l_kd) and terms.loss_cd.item() == pytest.approx(l_cd)
    assert terms.distillation.item() == pytest.approx(distillation)
    assert terms.loss.item() == pytest.approx(distillation + 0.25 * 12.0 / 8)
    w_cd = 0.7 if mixing == "paired" else 5 / 8
    assert terms.part_cd.item() == pytest.approx(w_cd * l_cd)


@pytest.mark.parametrize("mixing", ["paired", "uniform"])
def test_an_absent_group_has_mean_zero_and_no_weight(mixing):
    terms = combine(torch.tensor([6.0, 0.0]), torch.tensor(0.0), counts(3, 0), mixing, 0.3, 0.0)
    assert terms.loss_cd.item() == 0.0 and terms.part_cd.item() == 0.0
    assert terms.loss.item() == pytest.approx(2.0)  # L = L_kd


@pytest.mark.parametrize("mixing", ["paired", "uniform"])
@pytest.mark.parametrize("n", [(3.0, 5.0), (7.0, 0.0), (0.0, 2.0)])
@pytest.mark.parametrize("ce_weight", [0.0, 0.3])
def test_token_coefficients_are_the_formulas_weights_exactly(mixing, n, ce_weight):
    n = counts(*n)
    c, c_ce = token_coefficients(n, mixing, 0.3, ce_weight)
    # bit for bit what the hidden path used before the objective derived them
    w = term_weights(n, mixing, 0.3)
    assert torch.equal(c, torch.where(n > 0, w / n.clamp(min=1), 0.0))
    assert torch.equal(c_ce, ce_weight / n.sum().clamp(min=1))
    sums, ce = torch.tensor([1.7, 0.4]) * n, torch.tensor(5.3)
    assert ((c * sums).sum() + c_ce * ce).item() == pytest.approx(
        combine(sums, ce, n, mixing, 0.3, ce_weight).loss.item(), rel=1e-6)


# ---- the objective on tiny models ----
@pytest.fixture(scope="module")
def models(tiny_llama_dir, tiny_llama_big_dir):
    student = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_llama_big_dir).eval().requires_grad_(False)
    return student, teacher


def make_batch(vocab: int, kinds=(0, 1, 1, 0), length: int = 19) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (len(kinds), length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, -4:] = 0  # a padded row
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[mask == 0] = -100
    labels[0, :11] = -100  # a longer context (a response-level counterfactual's pruned prefix)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "is_counterfactual": torch.tensor(kinds)}


def objective(tmp_path, student, teacher, **kw) -> DistillObjective:
    args = DistillArguments(output_dir=str(tmp_path / "unused"), use_cpu=True, report_to="none",
                            **{"hybrid_lambda": 0.3, "mixing": "paired", **kw})
    return DistillObjective(args, student, teacher=teacher)


def loss_and_grads(obj, student, batch, **call):
    student.zero_grad()
    parts, _ = obj(student, batch, **call)
    parts.loss.backward()
    return parts, {n: p.grad.clone() for n, p in student.named_parameters()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(b.norm())
    return float((a - b).norm()) / den if den else float(a.norm())


@pytest.mark.parametrize("mixing", ["paired", "uniform"])
def test_hidden_and_logits_paths_give_the_same_loss_and_gradient(tmp_path, models, mixing):
    student, teacher = models
    batch = make_batch(student.config.vocab_size)
    kw = dict(ce_weight=0.3, temperature=1.5, kd_chunk_size=5, mixing=mixing)
    hidden = objective(tmp_path, student, teacher, kd_loss_path="hidden", **kw)
    logits = objective(tmp_path, student, teacher, kd_loss_path="logits", **kw)
    assert (hidden.path, logits.path) == ("hidden", "logits")
    step = count_targets(batch) * 2  # as if the step had more micro-batches (or processes)
    for call in ({}, {"counts": step, "scale": 2.0}):
        (ph, gh), (pl, gl) = (loss_and_grads(o, student, batch, **call) for o in (hidden, logits))
        assert ph.loss.item() == pytest.approx(pl.loss.item(), rel=1e-5)
        assert ph.counts.tolist() == pl.counts.tolist() and (ph.counts > 0).all()
        for name, value in vars(ph.terms).items():  # small sums of float32 divergences
            assert value.item() == pytest.approx(getattr(pl.terms, name).item(), rel=1e-4), name
        assert rel(ph.totals(), pl.totals()) <= 1e-5
        for name in gh:
            assert rel(gh[name], gl[name]) <= 1e-5, name
        # the loss is the formula's value on its own parts, times the scale
        assert ph.loss.item() == pytest.approx(ph.terms.loss.item() * call.get("scale", 1.0),
                                               rel=1e-5)


def test_cross_entropy_is_added_identically_on_both_paths(tmp_path, models):
    student, teacher = models
    batch = make_batch(student.config.vocab_size)
    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).logits[:, :-1]
    gold = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), reduction="sum")
    n = int((gold != -100).sum())
    for path in ("hidden", "logits"):
        without = objective(tmp_path, student, teacher, kd_loss_path=path)
        with_ce = objective(tmp_path, student, teacher, kd_loss_path=path, ce_weight=0.4)
        with torch.no_grad():
            a, _ = without(student, batch)
            b, _ = with_ce(student, batch)
        assert a.ce.item() == 0.0 and b.ce.item() == pytest.approx(ce.item(), rel=1e-5)
        assert b.terms.distillation.item() == pytest.approx(a.terms.distillation.item(), rel=1e-6)
        assert (b.loss - a.loss).item() == pytest.approx(0.4 * ce.item() / n, rel=1e-4), path


def test_the_path_and_why(tmp_path, models, caplog):
    student, teacher = models
    assert objective(tmp_path, student, teacher).path == "hidden"  # auto, where possible
    assert objective(tmp_path, student, teacher, kd_loss_path="logits").path == "logits"
    args = DistillArguments(output_dir=str(tmp_path / "x"), use_cpu=True, report_to="none")
    with caplog.at_level(logging.INFO, logger="leaf.distill.objective"):
        assert DistillObjective(args, student, teacher=teacher, fsdp=True).path == "logits"
    assert "FSDP shards the output layer's weight" in caplog.text
    args.kd_loss_path = "hidden"
    with pytest.raises(LeafError, match="kd_loss_path: hidden is not possible here: DeepSpeed"):
        DistillObjective(args, student, teacher=teacher, zero3=True)


def test_step_counts_sum_micro_batches_and_paired_steps_need_both_kinds(tmp_path, models):
    student, teacher = models
    vocab = student.config.vocab_size
    originals, cfs = make_batch(vocab, (0, 0)), make_batch(vocab, (1,))
    obj = objective(tmp_path, student, teacher)
    got = obj.step_counts([originals, cfs], "cpu", sum_over_processes=lambda t: t * 2)
    assert got.tolist() == (2 * (count_targets(originals) + count_targets(cfs))).tolist()
    with pytest.raises(RuntimeError, match="paired mixing: an optimizer batch without both"):
        obj.step_counts([originals], "cpu")
    obj.args.mixing = "uniform"  # read at each call
    assert obj.step_counts([originals], "cpu")[CD] == 0
    obj.has_counterfactuals = False  # plain KD
    obj.args.mixing = "paired"
    assert obj.step_counts([originals], "cpu")[KD] > 0
    assert obj.effective_lambda == 1.0
    logged = obj.step_running_values(counts(5, 0))
    assert logged["loss_cd"][1] == 0 and logged["weight_cd"] == (0.0, 1.0)


def test_eval_metrics_of_the_whole_set(tmp_path, models):
    student, teacher = models
    obj = objective(tmp_path, student, teacher, ce_weight=0.5)
    totals = torch.tensor([6.0, 2.0, 3.0, 5.0, 4.0])  # S_kd, S_cd, N_kd, N_cd, CE
    metrics = obj.eval_metrics(totals)
    assert metrics["eval_loss"] == pytest.approx(0.3 * 2.0 + 0.7 * 0.4 + 0.5 * 4.0 / 8)
    assert metrics["eval_loss_kd"] == pytest.approx(2.0)
    assert metrics["eval_loss_cd"] == pytest.approx(0.4)
    only_kd = obj.eval_metrics(torch.tensor([6.0, 0.0, 3.0, 0.0, 0.0]), "test")
    assert only_kd == {"test_loss": pytest.approx(2.0), "test_loss_kd": pytest.approx(2.0)}
    assert obj.eval_metrics(torch.zeros(5)) == {}


# ---- what the trainer logs ----
def test_running_means_by_name():
    means = RunningMeans(("loss_kd", "loss_cd", "share_cd", "weight_cd"))
    for step in range(2):  # two steps, of two micro-batches each
        means.add({"loss_kd": (None, 1.0), "loss_cd": (None, float(step)),
                   "weight_cd": (0.5 * step, 1.0)})
        for _ in range(2):
            means.add({"loss_kd": (0.5, None), "loss_cd": (0.25 * step, None),
                       "share_cd": (0.1, 0.4)}, per_process=True)
    assert list(means.take()) == ["loss_kd", "loss_cd", "share_cd", "weight_cd"]
    # the per-process sums are averaged over processes; the step's are the same everywhere
    means.add({"loss_kd": (None, 1.0), "loss_cd": (None, 0.0), "weight_cd": (0.0, 1.0)})
    means.add({"loss_kd": (3.0, None), "loss_cd": (0.0, None), "share_cd": (0.0, 2.0)},
              per_process=True)
    seen = []

    def mean_over_two(t):
        seen.append(t.clone())
        return t / 2

    got = means.take(mean_over_two)
    assert seen[0].tolist() == [3.0, 0.0, 0.0, 2.0]  # loss_kd, loss_cd, share_cd (value, weight)
    assert got == {"loss_kd": 1.5, "share_cd": 0.0, "weight_cd": 0.0}  # no step held a cf row
    assert means.take() == {}  # started again
    with pytest.raises(KeyError):
        means.add({"loss": (1.0, 1.0)})


def test_running_means_of_a_two_step_run():
    means = RunningMeans(("loss_kd", "loss_cd", "share_cd", "weight_cd"))
    for step in range(2):
        means.add({"loss_kd": (None, 1.0), "loss_cd": (None, 1.0), "weight_cd": (0.7, 1.0)})
        means.add({"loss_kd": (0.2 + step, None), "loss_cd": (0.4, None),
                   "share_cd": (0.28, 0.34 + 0.3 * step)}, per_process=True)
    assert means.take() == {"loss_kd": pytest.approx(0.7), "loss_cd": pytest.approx(0.4),
                            "share_cd": pytest.approx(0.56 / 0.98, abs=1e-6),
                            "weight_cd": pytest.approx(0.7)}


def test_the_trainers_loss_step_fits_on_a_screen():
    lines = sum(len(inspect.getsource(f).splitlines())
                for f in (DistillTrainer.compute_loss, DistillTrainer.evaluation_loop))
    assert lines < 60
