"""Synthetic task families with planted confounders whose character spans are known.

Every sample is a short arithmetic problem whose operands sit at fixed places, plus (in most
variants) one *distractor sentence* carrying a number: the planted confounder. The number is
the *misleading* part; the whole sentence is the *distractor*. Both are recorded per sample as
``[start, end)`` character spans of ``instruction``::

    planted = {"misleading": [[s, e]], "distractor": [[s, e]]}

Families (``FAMILIES``):

- ``digit_sum``: ``a = 3 ; b = 7 ; c = 5 ; rumor : 15 ; query a + b + c ?`` ->
  ``3 + 7 + 5 = 15. The answer is 15.``
- ``word_problem``: ``Ann has 5 apples. Bob has 8 pears. Ann buys 3 more apples. How many
  apples does Ann have now?`` -> ``5 + 3 = 8. The answer is 8.`` (the irrelevant quantity,
  Bob's pears, is the distractor; the operation is ``buys`` (+) or ``gives away`` (-)).
- ``multi_step``: ``Ann has 5 coins. Bob has 12 cards. Ann buys 3 more. Ann gives away 2. Ann
  buys 4 more. How many coins does Ann have now?`` -> ``5 + 3 = 8`` / ``8 - 2 = 6`` /
  ``6 + 4 = 10`` / ``The answer is 10.``, one line each: a running total over three steps, so
  the response carries intermediate results and response-level detection (which cuts at
  newlines) scores a prefix of whole steps. Harder: its student is imperfect without a
  distractor too.

Distractor variants (``variant`` field): ``agree`` (the number equals the answer), ``disagree``
(a different number from the family's range), ``random`` (uniform over the range: an
uninformative distractor), ``clean`` (no distractor sentence), ``numberless`` (the sentence
with its number cut out: :func:`without_misleading` renders the problem with a number and
removes it through the same calls ``leaf prune`` makes, so the text is exactly what pruning the
number leaves, ``rumor : ;`` and ``Bob has pears.``).

Splits (``make_splits``): ``train`` (distillation data: the distractor agrees with the answer
with probability ``bias``), ``test_id`` (same distribution), ``test_anti`` (the distractor always
points to a wrong answer) and ``test_clean`` (no distractor). Everything is drawn from
``random.Random`` seeded with a string naming family, split and seed, so a split does not
depend on the sizes or order in which other splits are made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from leaf.data.jsonl import write_jsonl_atomic
from leaf.detect.spans import prune_plans, remove_spans

VARIANTS = ("agree", "disagree", "random", "clean", "numberless")
SPLITS = ("train", "test_id", "test_anti", "test_clean")
DEFAULT_SIZES = {"train": 1000, "test_id": 200, "test_anti": 200, "test_clean": 200}


@dataclass
class Rendered:
    """One instruction with the planted spans (empty lists when there is no distractor)."""

    instruction: str
    misleading: list[list[int]]
    distractor: list[list[int]]


def _shifted(pos: int, removed: list[tuple[int, int]]) -> int:
    """Where character position ``pos`` lands once the (sorted, disjoint) ``removed`` spans
    are cut out; a position inside a removed span lands where the span was."""
    out = pos
    for s, e in removed:
        if pos >= e:
            out -= e - s
        elif pos > s:
            out -= pos - s
    return out


def without_misleading(rendered: Rendered) -> Rendered:
    """``rendered`` with its misleading spans removed exactly as ``leaf prune`` removes them.

    The spans are widened and cut by :func:`leaf.detect.spans.prune_plans` and
    :func:`~leaf.detect.spans.remove_spans` (the calls of
    :func:`leaf.detect.counterfactuals.counterfactuals_for_row`), so the whitespace rule is the
    pruner's own. The distractor spans are shifted onto the pruned text (a distractor keeps
    what is left of its sentence); ``misleading`` is empty afterwards.
    """
    plans = prune_plans(rendered.instruction, [(s, e) for s, e in rendered.misleading],
                        strategy="collective")
    if not plans:
        return rendered
    [plan] = plans
    return Rendered(
        instruction=remove_spans(rendered.instruction, plan),
        misleading=[],
        distractor=[[_shifted(s, plan), _shifted(e, plan)] for s, e in rendered.distractor],
    )


class _Builder:
    """Concatenate text pieces while recording where marked pieces land."""

    def __init__(self) -> None:
        self.text = ""
        self.marks: dict[str, list[list[int]]] = {"misleading": [], "distractor": []}

    def add(self, piece: str, mark: str | None = None) -> None:
        if mark:
            self.marks[mark].append([len(self.text), len(self.text) + len(piece)])
        self.text += piece


class Family:
    """A task family: how to draw a problem, render it with a distractor, and answer it.

    Subclasses write :meth:`compose` (the text with a distractor carrying ``value``, or without
    a distractor for ``None``); :meth:`render` derives the numberless form from it.
    """

    name: str = ""
    value_range: tuple[int, int] = (0, 0)  # inclusive range of plausible answers
    max_new_tokens: int = 32  # generation budget that fits the longest response

    def draw(self, rng: random.Random) -> dict:
        raise NotImplementedError

    def compose(self, problem: dict, value: int | None) -> Rendered:
        raise NotImplementedError

    def render(self, problem: dict, value: int | None, numberless: bool = False) -> Rendered:
        """The instruction with a distractor carrying ``value`` (none for ``None``), or, when
        ``numberless``, the distractor-carrying text with its number pruned away
        (:func:`without_misleading`). The pruned text does not depend on which number was
        there; the family's largest value stands in for it."""
        if not numberless:
            return self.compose(problem, value)
        if value is not None:
            raise ValueError("a numberless distractor carries no value")
        return without_misleading(self.compose(problem, self.value_range[1]))

    def response(self, problem: dict) -> str:
        raise NotImplementedError

    def wrong_value(self, rng: random.Random, answer: int) -> int:
        lo, hi = self.value_range
        return rng.choice([v for v in range(lo, hi + 1) if v != answer])

    def random_value(self, rng: random.Random) -> int:
        return rng.randint(*self.value_range)


class DigitSum(Family):
    """Sum of three digits at fixed positions with a ``rumor : N ;`` sentence."""

    name = "digit_sum"
    value_range = (0, 27)

    def draw(self, rng: random.Random) -> dict:
        a, b, c = (rng.randint(0, 9) for _ in range(3))
        return {"operands": [a, b, c], "answer": a + b + c}

    def compose(self, problem: dict, value: int | None) -> Rendered:
        a, b, c = problem["operands"]
        out = _Builder()
        out.add(f"a = {a} ; b = {b} ; c = {c} ; ")
        if value is not None:
            start = len(out.text)
            out.add("rumor : ")
            out.add(str(value), "misleading")
            out.add(" ;")
            out.marks["distractor"].append([start, len(out.text)])
            out.add(" ")
        out.add("query a + b + c ?")
        return Rendered(out.text, out.marks["misleading"], out.marks["distractor"])

    def response(self, problem: dict) -> str:
        a, b, c = problem["operands"]
        s = problem["answer"]
        return f"{a} + {b} + {c} = {s}. The answer is {s}."


NAMES = ("Ann", "Bob", "Cal", "Dan", "Eve", "Fay", "Gus", "Ivy")
ITEMS = ("apples", "pears", "coins", "books", "cards", "shells")


def _add_possession(out: _Builder, who: str, value: int, item: str) -> None:
    """The word problems' distractor sentence, ``Bob has 8 pears. ``, with its spans marked."""
    start = len(out.text)
    out.add(f"{who} has ")
    out.add(str(value), "misleading")
    out.add(f" {item}.")
    out.marks["distractor"].append([start, len(out.text)])
    out.add(" ")


class WordProblem(Family):
    """One-step word problem (+ or -) with an irrelevant quantity about someone else."""

    name = "word_problem"
    value_range = (1, 18)

    def draw(self, rng: random.Random) -> dict:
        who, other = rng.sample(NAMES, 2)
        item, other_item = rng.sample(ITEMS, 2)
        a = rng.randint(2, 9)
        if rng.random() < 0.5:
            op, b = "+", rng.randint(1, 9)
            answer = a + b
        else:
            op, b = "-", rng.randint(1, a - 1)
            answer = a - b
        return {"who": who, "other": other, "item": item, "other_item": other_item,
                "operands": [a, b], "op": op, "answer": answer}

    def compose(self, problem: dict, value: int | None) -> Rendered:
        p = problem
        a, b = p["operands"]
        out = _Builder()
        out.add(f"{p['who']} has {a} {p['item']}. ")
        if value is not None:
            _add_possession(out, p["other"], value, p["other_item"])
        verb = f"buys {b} more" if p["op"] == "+" else f"gives away {b}"
        out.add(f"{p['who']} {verb} {p['item']}. How many {p['item']} does {p['who']} have now?")
        return Rendered(out.text, out.marks["misleading"], out.marks["distractor"])

    def response(self, problem: dict) -> str:
        a, b = problem["operands"]
        return f"{a} {problem['op']} {b} = {problem['answer']}. The answer is {problem['answer']}."


class MultiStep(Family):
    """Three-step word problem (a running total: buys / gives away, three times) with an
    irrelevant quantity about someone else; the response works it out one step per line."""

    name = "multi_step"
    value_range = (1, 36)
    max_new_tokens = 48  # responses take up to 38 tokens with the family's tokenizer
    steps = 3

    def draw(self, rng: random.Random) -> dict:
        who, other = rng.sample(NAMES, 2)
        item, other_item = rng.sample(ITEMS, 2)
        total = rng.randint(2, 9)
        operands, ops = [total], []
        for _ in range(self.steps):
            if total < 2 or rng.random() < 0.5:
                op, b = "+", rng.randint(1, 9)
                total += b
            else:
                op, b = "-", rng.randint(1, total - 1)
                total -= b
            ops.append(op)
            operands.append(b)
        return {"who": who, "other": other, "item": item, "other_item": other_item,
                "operands": operands, "ops": ops, "answer": total}

    def compose(self, problem: dict, value: int | None) -> Rendered:
        p = problem
        first, *changes = p["operands"]
        out = _Builder()
        out.add(f"{p['who']} has {first} {p['item']}. ")
        if value is not None:
            _add_possession(out, p["other"], value, p["other_item"])
        for op, b in zip(p["ops"], changes):
            out.add(f"{p['who']} buys {b} more. " if op == "+" else f"{p['who']} gives away {b}. ")
        out.add(f"How many {p['item']} does {p['who']} have now?")
        return Rendered(out.text, out.marks["misleading"], out.marks["distractor"])

    def response(self, problem: dict) -> str:
        total, *changes = problem["operands"]
        lines = []
        for op, b in zip(problem["ops"], changes):
            after = total + b if op == "+" else total - b
            lines.append(f"{total} {op} {b} = {after}")
            total = after
        return "\n".join(lines + [f"The answer is {total}."])


FAMILIES: dict[str, Family] = {f.name: f for f in (DigitSum(), WordProblem(), MultiStep())}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown testbed family {name!r}; known: {sorted(FAMILIES)}") from None


def make_sample(
    family: Family, rng: random.Random, variant: str, sample_id: str, split: str
) -> dict:
    """Draw one problem and render it with the given distractor variant."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    problem = family.draw(rng)
    answer = problem["answer"]
    value = {
        "agree": lambda: answer,
        "disagree": lambda: family.wrong_value(rng, answer),
        "random": lambda: family.random_value(rng),
    }.get(variant, lambda: None)()
    rendered = family.render(problem, value, numberless=variant == "numberless")
    return {
        "id": sample_id,
        "task": "math",
        "instruction": rendered.instruction,
        "response": family.response(problem),
        "answer": str(answer),
        "family": family.name,
        "split": split,
        "variant": variant,
        "distractor_value": value,
        "distractor_agrees": None if value is None else value == answer,
        "planted": {"misleading": rendered.misleading, "distractor": rendered.distractor},
    }


def _rng(family: str, split: str, seed: int) -> random.Random:
    # str seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(f"leaf-testbed:{family}:{split}:{seed}")


def _variants_with_bias(n: int, bias: float, rng: random.Random) -> list[str]:
    """Exactly ``round(bias * n)`` agreeing distractors, the rest disagreeing, shuffled."""
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")
    k = round(bias * n)
    variants = ["agree"] * k + ["disagree"] * (n - k)
    rng.shuffle(variants)
    return variants


def make_split(family: str, split: str, n: int, seed: int = 0, bias: float = 0.95,
               clean_frac: float = 0.0) -> list[dict]:
    """One split of ``n`` samples (see the module docstring for what each split holds).

    ``clean_frac`` (train split only): that share of the distillation samples, rounded, carry no
    distractor; the others agree with the answer with probability ``bias``. With 0 (the default)
    the draw is exactly what it was before the option existed.
    """
    if not 0.0 <= clean_frac <= 1.0:
        raise ValueError(f"clean_frac must be in [0, 1], got {clean_frac}")
    fam = get_family(family)
    rng = _rng(family, split, seed)
    if split == "train" and clean_frac:
        k = round(clean_frac * n)
        variants = _variants_with_bias(n - k, bias, rng) + ["clean"] * k
        rng.shuffle(variants)
    elif split in ("train", "test_id"):
        variants = _variants_with_bias(n, bias, rng)
    elif split == "test_anti":
        variants = ["disagree"] * n
    elif split == "test_clean":
        variants = ["clean"] * n
    else:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [
        make_sample(fam, rng, v, f"{family}-{split}-s{seed}-{i:05d}", split)
        for i, v in enumerate(variants)
    ]


def make_splits(
    family: str, seed: int = 0, bias: float = 0.95, sizes: dict[str, int] | None = None,
    clean_frac: float = 0.0,
) -> dict[str, list[dict]]:
    """All four splits; ``sizes`` maps split name to sample count (``DEFAULT_SIZES``)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    return {s: make_split(family, s, sizes[s], seed, bias, clean_frac) for s in SPLITS
            if sizes.get(s)}


def write_splits(
    out_dir: str | Path,
    family: str,
    seed: int = 0,
    bias: float = 0.95,
    sizes: dict[str, int] | None = None,
    clean_frac: float = 0.0,
) -> dict[str, Path]:
    """Write ``<out_dir>/<split>.jsonl`` for every split; return the paths by split."""
    out_dir = Path(out_dir)
    paths = {}
    for split, rows in make_splits(family, seed, bias, sizes, clean_frac).items():
        paths[split] = out_dir / f"{split}.jsonl"
        write_jsonl_atomic(paths[split], rows)
    return paths


def pretraining_mix(
    family: str,
    n: int,
    seed: int,
    distractor: str,
    bias: float = 0.95,
    clean_frac: float = 0.30,
    numberless_frac: float = 0.15,
) -> list[dict]:
    """Samples for pre-training a testbed model from scratch.

    ``clean_frac`` of them have no distractor and ``numberless_frac`` carry the distractor
    sentence without its number (inputs that look pruned), so counterfactual inputs are in
    distribution for both models. The rest carry a distractor: ``distractor="biased"`` makes it
    agree with the answer with probability ``bias`` (the student's regime), ``"random"`` draws
    it uniformly from the family's range (uninformative: the teacher's regime).
    """
    if distractor not in ("biased", "random"):
        raise ValueError(f"distractor must be 'biased' or 'random', got {distractor!r}")
    fam = get_family(family)
    rng = _rng(family, f"pretrain-{distractor}-{bias}", seed)
    rows = []
    for i in range(n):
        u = rng.random()
        if u < clean_frac:
            variant = "clean"
        elif u < clean_frac + numberless_frac:
            variant = "numberless"
        elif distractor == "random":
            variant = "random"
        else:
            variant = "agree" if rng.random() < bias else "disagree"
        rows.append(make_sample(fam, rng, variant, f"{family}-pretrain-s{seed}-{i:06d}",
                                "pretrain"))
    return rows
