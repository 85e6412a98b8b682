"""Distillation throughput: leaf's trainer vs plain KD and vs a pad-to-max-length loop.

Real ``transformers.Trainer`` steps (AdamW, full-parameter) on tiny Llama-architecture models
that share a vocabulary: a student and a wider frozen teacher read online. The data are
random token rows with a long-tailed (log-normal) length distribution, as distillation data
are (most answers short, a few long); a third of the originals get one or two instruction-level
counterfactuals (the original with a span of 5-30 instruction tokens removed). All three sides
train on exactly the same rows in the same order (same seed, same batch size):

- **leaf**: :class:`leaf.distill.trainer.DistillTrainer` with its collator (each batch padded
  to its longest row), counterfactual rows in the counterfactual term (lambda = 0.5).
- **plain_kd**: a textbook KD ``Trainer`` (student and teacher forward, forward KL of the
  target positions with :func:`leaf.distill.losses.token_divergence`, averaged), same
  collator, every row an ordinary KD row: the same tokens.
- **pad_to_max**: the authors' style: the same textbook KD loss (originals and
  counterfactuals with equal weight), the teacher online, its logits cut to the student's
  vocabulary, and every batch padded to ``max_length``. ``max_length`` is the longest row
  rounded up to a multiple of 64, the most favourable choice for this side (the paper's runs
  use 4096).

Throughput counts real (non-padding) tokens per second of training step (step begin to step
end, as the Trainer's callbacks see it), summed over the steps of one run.

Run: ``python benchmarks/bench_distill.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import _common as C

QUICK = dict(vocab=12000, student=(64, 2, 4, 192), teacher=(128, 2, 4, 384), originals=24,
             median_len=240, sigma=0.55, min_len=48, cap=900, batch_size=4, steps=4, reps=3)
FULL = dict(vocab=32000, student=(128, 2, 4, 344), teacher=(256, 4, 4, 688), originals=64,
            median_len=320, sigma=0.55, min_len=64, cap=1536, batch_size=4, steps=8, reps=3)


def make_rows(cfg: dict, seed: int = 2) -> list[dict]:
    """Original rows (prompt ~40%, response ~60%) and instruction-level counterfactuals."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    for _ in range(cfg["originals"]):
        z = float(torch.randn(1, generator=g))
        n = int(min(cfg["cap"], max(cfg["min_len"], cfg["median_len"] * math.exp(cfg["sigma"] * z))))
        n_inst = int(0.4 * n)
        ids = torch.randint(3, cfg["vocab"], (n,), generator=g).tolist()
        labels = [-100] * n_inst + ids[n_inst:]
        rows.append({"input_ids": ids, "labels": labels, "is_counterfactual": 0})
        if float(torch.rand(1, generator=g)) < 1 / 3:
            for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
                width = int(torch.randint(5, 31, (1,), generator=g))
                start = int(torch.randint(1, max(2, n_inst - width), (1,), generator=g))
                width = min(width, n_inst - start - 1)
                cut = ids[:start] + ids[start + width:]
                cut_labels = labels[:start] + labels[start + width:]
                rows.append({"input_ids": cut, "labels": cut_labels, "is_counterfactual": 1})
    for i, r in enumerate(rows):
        r["row_index"] = i
    return rows


class StepClock:
    """A TrainerCallback summing the wall time of each optimisation step."""

    def __init__(self, device) -> None:
        self.device = device
        self.total = 0.0
        self.steps = 0

    def on_step_begin(self, args, state, control, **kw):
        C.sync(self.device)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        C.sync(self.device)
        self.total += time.perf_counter() - self._t0
        self.steps += 1

    def __getattr__(self, name):  # every other callback event: do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


class CountingCollator:
    """Wrap a collator; remember the real tokens of every batch it builds, in order."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.real: list[int] = []
        self.padded: list[int] = []

    def __call__(self, rows):
        batch = self.inner(rows)
        self.real.append(int(batch["attention_mask"].sum()))
        self.padded.append(batch["attention_mask"].numel())
        return batch


def plain_kd_trainer_class():
    """A textbook KD Trainer: forward KL of the target positions, averaged."""
    import torch
    from transformers import Trainer

    from leaf.distill.losses import token_divergence

    class PlainKDTrainer(Trainer):
        def __init__(self, *args, teacher=None, batches=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.eval().requires_grad_(False)
            self.batches = batches

        def get_train_dataloader(self):
            # the same rows in the same batches as leaf's trainer, so every side does the same work
            from torch.utils.data import DataLoader

            return self.accelerator.prepare(DataLoader(
                self.train_dataset, batch_sampler=self.batches, collate_fn=self.data_collator))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            out = model(input_ids=ids, attention_mask=mask)
            with torch.no_grad():
                teacher_logits = self.teacher(input_ids=ids, attention_mask=mask).logits
            vocab = out.logits.shape[-1]
            target = torch.cat([labels[:, 1:] != -100, labels.new_zeros(labels.shape[0], 1,
                                                                         dtype=torch.bool)], 1)
            div = token_divergence(out.logits[target], teacher_logits[..., :vocab][target])
            loss = div.mean()
            return (loss, out) if return_outputs else loss

    return PlainKDTrainer


def build_sides(cfg, args, rows, student, teacher, outdir):
    """Three ready trainers with their collators and clocks."""
    import torch

    from leaf.distill.config import DistillArguments
    from leaf.distill.data import DistillCollator
    from leaf.distill.trainer import DistillTrainer

    max_length = -(-max(len(r["input_ids"]) for r in rows) // 64) * 64
    kd_rows = [dict(r, is_counterfactual=0) for r in rows]
    common = dict(
        per_device_train_batch_size=cfg["batch_size"], max_steps=cfg["steps"],
        learning_rate=1e-5, warmup_steps=0, logging_strategy="no", save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0,
        use_cpu=args.device == "cpu", remove_unused_columns=False,
    )
    sides = {}
    batches = None  # leaf's batches (its mixing sampler), given to the other sides
    for name in ("leaf", "plain_kd", "pad_to_max"):
        targs = DistillArguments(output_dir=str(Path(outdir) / name), hybrid_lambda=0.5, **common)
        inner = DistillCollator(0, pad_to_multiple_of=max_length if name == "pad_to_max" else None)
        collator = CountingCollator(inner)
        clock = StepClock(torch.device(args.device))
        model = copy.deepcopy(student)
        if name == "leaf":
            trainer = DistillTrainer(model=model, args=targs, train_dataset=rows,
                                     data_collator=collator, teacher=teacher, callbacks=[clock])
            batches = [list(b) for b in trainer.make_batch_sampler()]
        else:
            trainer = plain_kd_trainer_class()(
                model=model, args=targs, train_dataset=kd_rows if name == "plain_kd" else rows,
                data_collator=collator, teacher=teacher, callbacks=[clock], batches=batches)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # no metrics printout after each run
        sides[name] = (trainer, collator, clock)
    return sides, max_length


# ---------------------------------------------------------------- peers (--peers)

PEER_SIDES = ("leaf", "trl")


def trl_gkd_trainer_class():
    """TRL's GKD trainer in its off-policy setting, fed the batches leaf's trainer forms."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    class SameBatchesGKD(GKDTrainer):
        def __init__(self, *args, batches=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches = batches

        def get_train_dataloader(self):
            from torch.utils.data import DataLoader

            return self.accelerator.prepare(DataLoader(
                self.train_dataset, batch_sampler=self.batches, collate_fn=self.data_collator))

    return SameBatchesGKD


def peer_child(args, cfg) -> None:
    """One run of one side (``args.child``) in this fresh process: a one-step warm-up run, then
    ``cfg['steps']`` optimisation steps measured for peak memory and real tokens/s."""
    import datasets

    from leaf.distill.config import DistillArguments
    from leaf.distill.data import DistillCollator
    from leaf.distill.trainer import DistillTrainer
    from leaf.testbed.tiny import build_tokenizer

    torch, device = C.setup_torch(args.threads, args.device)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    # KD w/o mask: the original rows only, lambda 1
    rows = [r for r in make_rows(cfg) if not r["is_counterfactual"]]
    student = C.llama(cfg["vocab"], *cfg["student"], seed=0).to(device)
    teacher = C.llama(cfg["vocab"], *cfg["teacher"], seed=1).to(device)
    common = dict(per_device_train_batch_size=cfg["batch_size"], max_steps=cfg["steps"],
                  learning_rate=1e-5, warmup_steps=0, logging_strategy="no", save_strategy="no",
                  report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0,
                  use_cpu=args.device == "cpu", remove_unused_columns=False,
                  gradient_checkpointing=False, bf16=False)
    collator = CountingCollator(DistillCollator(0))
    clock = StepClock(device)
    with tempfile.TemporaryDirectory() as out:
        leaf = DistillTrainer(model=student, args=DistillArguments(
            output_dir=out, hybrid_lambda=1.0, **common), train_dataset=rows,
            data_collator=collator, teacher=teacher, callbacks=[clock])
        batches = [list(b) for b in leaf.make_batch_sampler()]
        if args.child == "trl":
            from trl.experimental.gkd import GKDConfig

            targs = GKDConfig(output_dir=out, lmbda=0.0, beta=0.0, temperature=1.0,
                              seq_kd=False, max_length=None, **common)
            trainer = trl_gkd_trainer_class()(
                model=student, teacher_model=teacher, args=targs,
                train_dataset=datasets.Dataset.from_list(rows), data_collator=collator,
                processing_class=build_tokenizer("llama3"), callbacks=[clock], batches=batches)
            assert (trainer.lmbda, trainer.beta, trainer.seq_kd) == (0.0, 0.0, False)
        else:
            trainer = leaf
            assert trainer.loss_path in ("hidden", "logits")
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.args.max_steps = 1
        trainer.train()  # warm-up: lazy initialisations, optimizer state
        trainer.args.max_steps = cfg["steps"]
        collator.real.clear()
        clock.total, clock.steps = 0.0, 0
        with C.PeakMemory(device) as peak:
            trainer.train()
        assert clock.steps == cfg["steps"], clock.steps
        losses = [e["train_loss"] for e in trainer.state.log_history if "train_loss" in e]
    C.child_report(peak, side=args.child, time_s=clock.total,
                   real_tokens=sum(collator.real[: cfg["steps"]]), train_loss=losses[-1],
                   loss_path=getattr(trainer, "loss_path", "logits (TRL)"))


def peers_main(args, cfg) -> int:
    import os

    here = Path(__file__).resolve()
    res: dict[str, list[dict]] = {s: [] for s in PEER_SIDES}
    loads = []
    base = ["--device", args.device, "--threads", str(args.threads), "--steps", str(cfg["steps"])]
    base += ["--quick"] if args.quick else []
    for r in range(cfg["reps"]):
        for side in (PEER_SIDES if r % 2 == 0 else PEER_SIDES[::-1]):
            res[side].append(C.run_child(here, ["--peers", "--child", side, *base]))
            loads.append(os.getloadavg()[0])
    tokens = {s: {x["real_tokens"] for x in v} for s, v in res.items()}
    assert tokens["leaf"] == tokens["trl"] and len(tokens["leaf"]) == 1, tokens
    # the same loss on the same batches: a check that both sides train the same objective
    first = {s: v[0]["train_loss"] for s, v in res.items()}
    rel = abs(first["leaf"] - first["trl"]) / abs(first["trl"])
    assert rel <= 1e-3, f"leaf and TRL train different losses: {first}"
    tps = {s: [x["real_tokens"] / x["time_s"] for x in v] for s, v in res.items()}
    mem = {s: [C.mib(x["peak_bytes"]) for x in v] for s, v in res.items()}
    result = {
        "name": "distill_peers",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_distill.py --peers" + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else ""),
        "config": {**cfg, "trl_version": _version("trl"), "leaf_loss_path": res["leaf"][0]["loss_path"],
                   "real_tokens_per_run": tokens["leaf"].pop()},
        "tokens_per_s": {s: C.summary(v) for s, v in tps.items()},
        "peak_mib": {s: C.summary(v) for s, v in mem.items()},
        "train_loss": first, "loss_rel_diff": rel, "load_1min": [min(loads), max(loads)],
        "tokens_per_s_over_trl": C.summary(C.ratios(tps["leaf"], tps["trl"])),
        "mem_over_trl": C.summary(C.ratios(mem["leaf"], mem["trl"])),
        "mem_method": res["leaf"][0]["method"],
    }
    for s in PEER_SIDES:
        print(f"{s:5s} real tokens/s {C.fmt(result['tokens_per_s'][s], 0)}  peak MiB "
              f"{C.fmt(result['peak_mib'][s], 0)}  train loss {first[s]:.6f}")
    print(f"load average (1 min) during the runs {min(loads):.1f}-{max(loads):.1f}; leaf's loss "
          f"path {result['config']['leaf_loss_path']}; TRL {result['config']['trl_version']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(C.ratio_line({"tokens_per_s_over_trl": result["tokens_per_s_over_trl"]["median"],
                        "mem_over_trl": result["mem_over_trl"]["median"]}))
    return 0


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "absent"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings, under a minute on 2 cores")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for all sides")
    p.add_argument("--reps", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--peers", action="store_true",
                   help="leaf's DistillTrainer (KD w/o mask) against TRL's GKD trainer, off-policy "
                        "(pip install --no-deps trl, the [bench] extra): tokens/s and peak memory")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("reps", "steps"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    if args.peers:
        if args.child:
            peer_child(args, cfg)
            return 0
        return peers_main(args, cfg)
    torch, device = C.setup_torch(args.threads, args.device)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()

    rows = make_rows(cfg)
    student = C.llama(cfg["vocab"], *cfg["student"], seed=0)
    teacher = C.llama(cfg["vocab"], *cfg["teacher"], seed=1).to(device)
    with tempfile.TemporaryDirectory() as outdir:
        sides, max_length = build_sides(cfg, args, rows, student, teacher, outdir)
        leaf_loss_path = sides["leaf"][0].loss_path
        clocks = {k: v[2] for k, v in sides.items()}
        collators = {k: v[1] for k, v in sides.items()}

        def run(name):
            def call():
                trainer, collator, clock = sides[name]
                collator.real.clear()
                collator.padded.clear()
                clock.total, clock.steps = 0.0, 0
                trainer.train()
                assert clock.steps == cfg["steps"], (name, clock.steps)
                run.results[name].append((clock.total, sum(collator.real[: cfg["steps"]]),
                                          sum(collator.padded[: cfg["steps"]])))
            return call

        run.results = {k: [] for k in sides}
        # warm-up (one untimed run per side), then interleaved timed runs
        C.interleaved({k: run(k) for k in sides}, cfg["reps"], device, warmup=1)
        results = {k: v[1:] for k, v in run.results.items()}  # drop the warm-up run
        _ = clocks, collators

    tps = {k: [real / t for t, real, _ in v] for k, v in results.items()}
    real_tokens = {k: v[0][1] for k, v in results.items()}
    padded_tokens = {k: v[0][2] for k, v in results.items()}
    assert real_tokens["leaf"] == real_tokens["plain_kd"] == real_tokens["pad_to_max"], real_tokens
    vs_kd = C.ratios(tps["leaf"], tps["plain_kd"])
    vs_pad = C.ratios(tps["leaf"], tps["pad_to_max"])
    n_cf = sum(r["is_counterfactual"] for r in rows)
    lengths = sorted(len(r["input_ids"]) for r in rows)
    result = {
        "name": "distill",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_distill.py" + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else ""),
        "config": {**cfg, "rows": len(rows), "counterfactual_rows": n_cf,
                   "length_median": lengths[len(lengths) // 2], "length_max": lengths[-1],
                   "max_length": max_length, "leaf_loss_path": leaf_loss_path,
                   "student_params": C.n_params(student), "teacher_params": C.n_params(teacher)},
        "real_tokens_per_run": real_tokens,
        "padded_tokens_per_run": padded_tokens,
        "tokens_per_s": {k: C.summary(v) for k, v in tps.items()},
        "leaf_vs_plain_kd": C.summary(vs_kd),
        "leaf_vs_pad_to_max": C.summary(vs_pad),
    }
    print(json.dumps(result["config"]))
    for k in tps:
        print(f"{k:11s} real tokens/s {C.fmt(result['tokens_per_s'][k], 0)}  "
              f"(real {real_tokens[k]} of {padded_tokens[k]} positions per run)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(C.ratio_line({"leaf_vs_plain_kd": result["leaf_vs_plain_kd"]["median"],
                        "leaf_vs_pad_to_max": result["leaf_vs_pad_to_max"]["median"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
