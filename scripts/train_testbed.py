"""Pre-train the testbed's teacher and student from scratch and measure them on every split.

Recipe per family (``RECIPES``): one tokenizer (byte-level BPE, single-digit tokens, Llama-3
chat template) built from the family's text and shared by both models; a larger *teacher*
pre-trained with an uninformative distractor (its number drawn at random) and a small
*student* pre-trained where the distractor agrees with the answer 95% of the time, so it learns
to lean on it. Both see distractor-free inputs and inputs whose distractor lost its number (what
pruning leaves), so counterfactual inputs are in distribution. Training is
``transformers.Trainer`` (AdamW, cosine schedule), seeded; on CPU with a fixed thread count a
re-run gives the same weights.

Writes ``OUT/<family>/{teacher,student}/`` (safetensors + tokenizer files) and
``OUT/<family>/calibration.json`` (greedy accuracy per split, steps, seeds, wall time).

    python scripts/train_testbed.py --family digit_sum --roles teacher student
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

from leaf.data.jsonl import write_json_atomic
from leaf.data.templates import chat_layout
from leaf.testbed.assets import ASSETS_DIR
from leaf.testbed.evaluate import greedy_accuracy
from leaf.testbed.tasks import FAMILIES, SPLITS, make_splits, pretraining_mix
from leaf.testbed.tiny import build_model
from leaf.testbed.tokenizer import build_testbed_tokenizer

TOKENIZER = dict(vocab_size=384, corpus_samples=4000, seed=0)
EVAL = dict(seed=1000, bias=0.95, n=200)  # held-out test splits, never used for training
VALIDATION = dict(seed=2000, bias=0.95, n=50, every=250)  # for early stopping only
TEACHER = dict(arch=dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=256),
               distractor="random", n_samples=20000, steps=4000, lr=3e-3, batch=64, seed=11,
               stop_at=1.0)
STUDENT = dict(arch=dict(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64),
               distractor="biased", bias=0.95, n_samples=20000, steps=1500, lr=3e-3, batch=64,
               seed=22, stop_at=None)
RECIPES = {
    "digit_sum": {"teacher": TEACHER, "student": STUDENT},
    # a +- b is easy enough that the hidden-32 student given the digit_sum recipe learned it and
    # ignored the distractor (1.0 on every split); a more biased distractor (99%) and a shorter
    # schedule leave it leaning on it, while it stays right on clean inputs.
    "word_problem": {"teacher": TEACHER, "student": STUDENT | dict(bias=0.99, steps=700)},
    # Three chained steps: the one-layer student learned the running total and ignored the
    # distractor (0.93 with a wrong one; the final step's operands sit on the line above, the
    # distractor at no fixed distance), and so did two-layer students at bias 0.95. Two layers,
    # 99% agreement and a short schedule leave one that leans on it and, without it, still
    # errs on about one problem in five (docs/testbed.md).
    "multi_step": {"teacher": TEACHER,
                   "student": STUDENT | dict(arch=STUDENT["arch"] | dict(layers=2), bias=0.99,
                                             steps=1000)},
}
MIX = dict(clean_frac=0.30, numberless_frac=0.15)
HELD_OUT = tuple(s for s in SPLITS if s != "train")  # validated and evaluated on by default
# Extra checkpoints beside a family's teacher and student, saved as roles of their own
# (``testbed:<family>/<role>``): a recipe of the family changed in a few fields. The second
# study (docs/study2.md) uses them: students pre-trained with less of the numberless form (a
# dose of counterfactual signal: the less a student saw what pruning leaves, the more a
# counterfactual has to teach it) and, for the distractor-shift regime, a teacher pre-trained on
# varied distractor positions and counts (the shipped one, trained on one layout, fails when
# the distractor moves); it is validated on the moved and two-distractor splits too, and
# measured on every shift split (the in-topic one stays unseen in its training).
SHIFT_HELD_OUT = HELD_OUT + ("test_anti_moved", "test_anti_two", "test_anti_topic")
EXTRA_ROLES = {
    "word_problem": {
        "student_nl00": ("student", dict(mix=dict(numberless_frac=0.0))),
        "student_nl03": ("student", dict(mix=dict(numberless_frac=0.03))),
        "teacher_varied": ("teacher", dict(
            mix=dict(layouts="varied"),
            validate_on=HELD_OUT + ("test_anti_moved", "test_anti_two"),
            evaluate_on=SHIFT_HELD_OUT)),
    },
}


def recipe_of(family: str, role: str) -> dict:
    """The training recipe of one role: a base role's, with an extra role's changes."""
    if role in RECIPES[family]:
        return RECIPES[family][role] | {"mix": MIX}
    base, change = EXTRA_ROLES[family][role]
    recipe = RECIPES[family][base] | {k: v for k, v in change.items() if k != "mix"}
    return recipe | {"mix": MIX | change.get("mix", {})}


def family_tokenizer(family: str):
    rows = pretraining_mix(family, TOKENIZER["corpus_samples"], TOKENIZER["seed"], "random")
    corpus = ["user", "assistant", "system", "\n\n"] * 50
    corpus += [t for r in rows for t in (r["instruction"], r["response"])]
    return build_testbed_tokenizer(corpus, TOKENIZER["vocab_size"])


def encode_rows(tokenizer, rows: list[dict]) -> list[dict]:
    """Token ids and labels (-100 outside the response) for chat-formatted samples.

    Same layout as ``leaf.data.templates.encode`` (the template is rendered once, not per row).
    """
    layout = chat_layout(tokenizer, "x")
    prompts = [layout.head + r["instruction"] + layout.tail for r in rows]
    texts = [p + r["response"] + layout.end_of_turn for p, r in zip(prompts, rows)]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for ids, offsets, prompt in zip(enc["input_ids"], enc["offset_mapping"], prompts):
        labels = [t if end > len(prompt) else -100 for t, (_, end) in zip(ids, offsets)]
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return out


class StopWhenAccurate(TrainerCallback):
    """Every ``every`` steps, greedy accuracy on validation splits; stop once all >= target.

    Generation draws no random numbers, so a stopped run's weights equal the first steps of
    the full run.
    """

    def __init__(self, tokenizer, splits: dict, every: int, target: float | None):
        self.tokenizer, self.splits, self.every, self.target = tokenizer, splits, every, target
        self.history: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            return
        acc = {s: round(greedy_accuracy(model, self.tokenizer, rows)["accuracy"], 3)
               for s, rows in self.splits.items()}
        model.train()
        self.history.append({"step": state.global_step, **acc})
        print(f"  validation {self.history[-1]}", flush=True)
        if self.target is not None and min(acc.values()) >= self.target:
            control.should_training_stop = True


def held_out(family: str, spec: dict, splits: tuple[str, ...] = HELD_OUT) -> dict[str, list[dict]]:
    """The test ``splits`` (``test_id``, ``test_anti`` and ``test_clean`` unless told) drawn
    with ``spec``'s seed, bias and size."""
    made = make_splits(family, spec["seed"], spec["bias"],
                       {"train": 0, **{s: 0 for s in HELD_OUT}, **{s: spec["n"] for s in splits}})
    return {s: made[s] for s in splits}


def train_role(family: str, role: str, out_dir: Path, tokenizer) -> dict:
    recipe = recipe_of(family, role)
    eval_splits = held_out(family, EVAL, recipe.get("evaluate_on", HELD_OUT))
    rows = pretraining_mix(family, recipe["n_samples"], recipe["seed"], recipe["distractor"],
                           bias=recipe.get("bias", 0.95), **recipe["mix"])
    dataset = encode_rows(tokenizer, rows)
    model = build_model(tokenizer, "llama", seed=recipe["seed"], max_positions=256,
                        **recipe["arch"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{family}/{role}] {n_params} parameters, {len(dataset)} samples", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=recipe["steps"], learning_rate=recipe["lr"],
            per_device_train_batch_size=recipe["batch"], lr_scheduler_type="cosine",
            warmup_steps=100, weight_decay=0.01, logging_steps=100, save_strategy="no",
            report_to="none", seed=recipe["seed"], data_seed=recipe["seed"], use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True,
        )
        validation = StopWhenAccurate(
            tokenizer, held_out(family, VALIDATION, recipe.get("validate_on", HELD_OUT)),
            VALIDATION["every"], recipe["stop_at"])
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
                          callbacks=[validation])
        start = time.time()
        result = trainer.train()
        train_s = time.time() - start
    model.eval()
    accuracy = {}
    for split, samples in eval_splits.items():
        accuracy[split] = greedy_accuracy(model, tokenizer, samples)["accuracy"]
        print(f"[{family}/{role}] {split}: {accuracy[split]:.3f}", flush=True)
    target = out_dir / role
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return {
        "arch": {"type": "llama", **recipe["arch"]}, "parameters": n_params,
        "pretraining": {k: recipe[k] for k in ("distractor", "n_samples") if k in recipe}
        | ({"bias": recipe["bias"]} if "bias" in recipe else {}) | recipe["mix"],
        "max_steps": recipe["steps"], "steps": result.global_step, "stop_at": recipe["stop_at"],
        "validation": validation.history, "lr": recipe["lr"], "batch_size": recipe["batch"],
        **({"validated_on": list(recipe["validate_on"])} if "validate_on" in recipe else {}),
        "seed": recipe["seed"], "final_train_loss": round(result.training_loss, 4),
        "train_wall_s": round(train_s, 1), "accuracy": accuracy,
        "command": " ".join(["python", "scripts/train_testbed.py", "--family", family,
                             "--roles", role]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--roles", nargs="+", default=["teacher", "student"],
                        help="teacher, student, or an extra role of the family "
                             f"({ {f: sorted(r) for f, r in EXTRA_ROLES.items()} })")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR)
    # One thread: on a shared 2-core machine a second OpenMP thread made each step 5x slower.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    known = set(RECIPES[args.family]) | set(EXTRA_ROLES.get(args.family, {}))
    if unknown := [r for r in args.roles if r not in known]:
        parser.error(f"--roles: unknown role(s) {unknown} for {args.family}; known: {sorted(known)}")
    torch.set_num_threads(args.threads)

    out_dir = args.out / args.family
    tokenizer = family_tokenizer(args.family)
    calib_path = out_dir / "calibration.json"
    calib = json.loads(calib_path.read_text()) if calib_path.exists() else {}
    calib.pop("command", None)  # each role records its own command
    calib.update({
        "family": args.family, "tokenizer": TOKENIZER, "eval": EVAL, "validation": VALIDATION,
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "threads": args.threads, "machine": platform.machine(),
                        "python": platform.python_version()},
    })
    for role in args.roles:
        calib[role] = train_role(args.family, role, out_dir, tokenizer)
        write_json_atomic(calib_path, calib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
