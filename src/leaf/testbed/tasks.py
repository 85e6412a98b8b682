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

Distractor layouts (``LAYOUTS``): where the distractor sentences sit and how many there are.
Every split above uses ``shipped`` (one sentence, right after the first one). The *shift*
splits (``SHIFT_SPLITS``, made only when asked for) test layouts the distillation data never
shows, always with wrong values: ``test_anti_moved`` (one sentence at a position the shipped
layout never uses: after the operation sentences, before the question; ``digit_sum``: before
``a = ``), ``test_anti_two`` (two sentences about two different other people and items) and
``test_anti_topic`` (an in-topic sentence: another person, the *same* item as the question,
``Bob has 8 apples.``). ``digit_sum`` has no people or items and refuses the last two.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from leaf.data.jsonl import write_jsonl_atomic
from leaf.detect.spans import prune_plans, remove_spans

VARIANTS = ("agree", "disagree", "random", "clean", "numberless")
SPLITS = ("train", "test_id", "test_anti", "test_clean")
DEFAULT_SIZES = {"train": 1000, "test_id": 200, "test_anti": 200, "test_clean": 200}


@dataclass(frozen=True)
class Layout:
    """Where a problem's distractor sentences go and how many there are.

    ``position``: ``shipped`` (after the first sentence, the layout of every original split) or
    ``moved`` (after the operation sentences, before the question; ``digit_sum``: first).
    ``count``: distractor sentences (each about another person and item). ``topic``: the
    sentence is about the question's own item (``Bob has 8 apples.``).
    """

    position: str = "shipped"
    count: int = 1
    topic: bool = False


LAYOUTS = {
    "shipped": Layout(),
    "moved": Layout("moved"),
    "two": Layout(count=2),
    "two_moved": Layout("moved", count=2),
    "topic": Layout(topic=True),
}
# Test splits with a shifted distractor layout, always disagreeing: split -> layout name.
SHIFT_SPLITS = {"test_anti_moved": "moved", "test_anti_two": "two", "test_anti_topic": "topic"}
ALL_SPLITS = SPLITS + tuple(SHIFT_SPLITS)
# pretraining_mix(layouts="varied"): position and count drawn uniformly per distractor row.
VARIED_LAYOUTS = ("shipped", "moved", "two", "two_moved")


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
    layouts: tuple[str, ...] = tuple(LAYOUTS)  # the distractor layouts it can express

    def draw(self, rng: random.Random) -> dict:
        raise NotImplementedError

    def check_layout(self, layout: str) -> Layout:
        """The :class:`Layout` named ``layout``; a ValueError if this family cannot express it."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown distractor layout {layout!r}; known: {list(LAYOUTS)}")
        if layout not in self.layouts:
            raise ValueError(f"testbed family {self.name!r} cannot express the {layout!r} "
                             f"distractor layout (it has: {list(self.layouts)})")
        return LAYOUTS[layout]

    def extend(self, problem: dict, rng: random.Random, layout: str) -> dict:
        """``problem`` with whatever ``layout`` needs beyond :meth:`draw` (more people and items),
        drawn from ``rng`` after the problem itself, so the shipped layout draws nothing more."""
        self.check_layout(layout)
        return problem

    def compose(self, problem: dict, value: int | list[int] | None,
                layout: str = "shipped") -> Rendered:
        """The text with a distractor carrying ``value`` (a list: one value per sentence of a
        several-sentence ``layout``), or without a distractor for ``None``."""
        raise NotImplementedError

    def render(self, problem: dict, value: int | list[int] | None, numberless: bool = False,
               layout: str = "shipped") -> Rendered:
        """The instruction with a distractor carrying ``value`` (none for ``None``), or, when
        ``numberless``, the distractor-carrying text with its number pruned away
        (:func:`without_misleading`). The pruned text does not depend on which number was
        there; the family's largest value stands in for it."""
        if not numberless:
            return self.compose(problem, value, layout)
        if value is not None:
            raise ValueError("a numberless distractor carries no value")
        count = self.check_layout(layout).count
        stand_in = self.value_range[1] if count == 1 else [self.value_range[1]] * count
        return without_misleading(self.compose(problem, stand_in, layout))

    def response(self, problem: dict) -> str:
        raise NotImplementedError

    def wrong_value(self, rng: random.Random, answer: int,
                    exclude: Collection[int] = ()) -> int:
        lo, hi = self.value_range
        return rng.choice([v for v in range(lo, hi + 1) if v != answer and v not in exclude])

    def random_value(self, rng: random.Random) -> int:
        return rng.randint(*self.value_range)


class DigitSum(Family):
    """Sum of three digits at fixed positions with a ``rumor : N ;`` sentence."""

    name = "digit_sum"
    value_range = (0, 27)
    # no people or items: one rumor, at its shipped place or (moved) before the operands
    layouts = ("shipped", "moved")

    def draw(self, rng: random.Random) -> dict:
        a, b, c = (rng.randint(0, 9) for _ in range(3))
        return {"operands": [a, b, c], "answer": a + b + c}

    def compose(self, problem: dict, value: int | list[int] | None,
                layout: str = "shipped") -> Rendered:
        a, b, c = problem["operands"]
        [value] = _values(value, self.check_layout(layout))
        out = _Builder()

        def rumor() -> None:
            start = len(out.text)
            out.add("rumor : ")
            out.add(str(value), "misleading")
            out.add(" ;")
            out.marks["distractor"].append([start, len(out.text)])
            out.add(" ")

        if value is not None and layout == "moved":
            rumor()
        out.add(f"a = {a} ; b = {b} ; c = {c} ; ")
        if value is not None and layout == "shipped":
            rumor()
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


def _values(value: int | list[int] | None, layout: Layout) -> list[int | None]:
    """One value per distractor sentence of ``layout`` (``[None]`` without a distractor)."""
    if value is None:
        return [None]
    values = [value] if isinstance(value, int) else list(value)
    if len(values) != layout.count:
        raise ValueError(f"{layout.count} distractor sentence(s) need as many values, "
                         f"got {values}")
    return values


def _extend_people(problem: dict, rng: random.Random, layout: Layout) -> dict:
    """A second other person and item (two distractor sentences), drawn after the problem."""
    if layout.count < 2:
        return problem
    taken_names = {problem["who"], problem["other"]}
    taken_items = {problem["item"], problem["other_item"]}
    return {**problem, "other2": rng.choice([n for n in NAMES if n not in taken_names]),
            "other_item2": rng.choice([i for i in ITEMS if i not in taken_items])}


def _distractor_people(problem: dict, layout: Layout) -> list[tuple[str, str]]:
    """``(person, item)`` of each distractor sentence of ``layout``."""
    first = (problem["other"], problem["item"] if layout.topic else problem["other_item"])
    if layout.count == 1:
        return [first]
    return [first, (problem["other2"], problem["other_item2"])]


def _add_distractors(out: _Builder, problem: dict, values: list[int | None],
                     layout: Layout, position: str) -> None:
    """The distractor sentences, if ``layout`` puts them at ``position``."""
    if values == [None] or layout.position != position:
        return
    for (who, item), value in zip(_distractor_people(problem, layout), values):
        _add_possession(out, who, value, item)


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

    def extend(self, problem: dict, rng: random.Random, layout: str) -> dict:
        return _extend_people(problem, rng, self.check_layout(layout))

    def compose(self, problem: dict, value: int | list[int] | None,
                layout: str = "shipped") -> Rendered:
        p = problem
        a, b = p["operands"]
        spec = self.check_layout(layout)
        values = _values(value, spec)
        out = _Builder()
        out.add(f"{p['who']} has {a} {p['item']}. ")
        _add_distractors(out, p, values, spec, "shipped")
        verb = f"buys {b} more" if p["op"] == "+" else f"gives away {b}"
        out.add(f"{p['who']} {verb} {p['item']}. ")
        _add_distractors(out, p, values, spec, "moved")
        out.add(f"How many {p['item']} does {p['who']} have now?")
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

    def extend(self, problem: dict, rng: random.Random, layout: str) -> dict:
        return _extend_people(problem, rng, self.check_layout(layout))

    def compose(self, problem: dict, value: int | list[int] | None,
                layout: str = "shipped") -> Rendered:
        p = problem
        first, *changes = p["operands"]
        spec = self.check_layout(layout)
        values = _values(value, spec)
        out = _Builder()
        out.add(f"{p['who']} has {first} {p['item']}. ")
        _add_distractors(out, p, values, spec, "shipped")
        for op, b in zip(p["ops"], changes):
            out.add(f"{p['who']} buys {b} more. " if op == "+" else f"{p['who']} gives away {b}. ")
        _add_distractors(out, p, values, spec, "moved")
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
    family: Family, rng: random.Random, variant: str, sample_id: str, split: str,
    layout: str | None = None,
) -> dict:
    """Draw one problem and render it with the given distractor variant.

    ``layout`` (a name of ``LAYOUTS``) places the distractor sentences; the row then records it
    (``layout``) and every sentence's value (``distractor_values``; ``distractor_value`` is the
    first sentence's). ``None`` is the shipped layout with the original row fields and draws,
    so the original splits are byte-identical to what they were before layouts existed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    spec = family.check_layout(layout or "shipped")
    problem = family.draw(rng)
    if layout is not None:
        problem = family.extend(problem, rng, layout)
    answer = problem["answer"]
    values: list[int] = []
    for _ in range(spec.count if variant in ("agree", "disagree", "random") else 0):
        values.append({
            "agree": lambda: answer,
            # several wrong values differ from each other too
            "disagree": lambda: family.wrong_value(rng, answer, exclude=values),
            "random": lambda: family.random_value(rng),
        }[variant]())
    value = values[0] if values else None
    rendered = family.render(problem, (values if spec.count > 1 else value) if values else None,
                             numberless=variant == "numberless", layout=layout or "shipped")
    row = {
        "id": sample_id,
        "task": "math",
        "instruction": rendered.instruction,
        "response": family.response(problem),
        "answer": str(answer),
        "family": family.name,
        "split": split,
        "variant": variant,
        "distractor_value": value,
        "distractor_agrees": None if value is None else all(v == answer for v in values),
        "planted": {"misleading": rendered.misleading, "distractor": rendered.distractor},
    }
    if layout is not None:
        row["layout"] = layout
        row["distractor_values"] = values
    return row


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
    """One split of ``n`` samples (see the module docstring for what each split holds; a shift
    split, ``SHIFT_SPLITS``, holds disagreeing distractors in its layout and ignores ``bias``).

    ``clean_frac`` (train split only): that share of the distillation samples, rounded, carry no
    distractor; the others agree with the answer with probability ``bias``. With 0 (the default)
    the draw is exactly what it was before the option existed.
    """
    if not 0.0 <= clean_frac <= 1.0:
        raise ValueError(f"clean_frac must be in [0, 1], got {clean_frac}")
    fam = get_family(family)
    if split in SHIFT_SPLITS:
        layout = SHIFT_SPLITS[split]
        fam.check_layout(layout)  # digit_sum cannot express every layout
        rng = _rng(family, split, seed)
        return [make_sample(fam, rng, "disagree", f"{family}-{split}-s{seed}-{i:05d}", split,
                            layout) for i in range(n)]
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
        raise ValueError(f"split must be one of {ALL_SPLITS}, got {split!r}")
    return [
        make_sample(fam, rng, v, f"{family}-{split}-s{seed}-{i:05d}", split)
        for i, v in enumerate(variants)
    ]


def make_splits(
    family: str, seed: int = 0, bias: float = 0.95, sizes: dict[str, int] | None = None,
    clean_frac: float = 0.0,
) -> dict[str, list[dict]]:
    """The four splits, and the shift splits ``sizes`` asks for; ``sizes`` maps split name to
    sample count (``DEFAULT_SIZES`` for the four; a shift split is made only when named)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    if unknown := sorted(set(sizes) - set(ALL_SPLITS)):
        raise ValueError(f"unknown testbed split {unknown[0]!r}; known: {list(ALL_SPLITS)}")
    return {s: make_split(family, s, sizes[s], seed, bias, clean_frac) for s in ALL_SPLITS
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
    layouts: str = "shipped",
) -> list[dict]:
    """Samples for pre-training a testbed model from scratch.

    ``clean_frac`` of them have no distractor and ``numberless_frac`` carry the distractor
    sentence without its number (inputs that look pruned), so counterfactual inputs are in
    distribution for both models. The rest carry a distractor: ``distractor="biased"`` makes it
    agree with the answer with probability ``bias`` (the student's regime), ``"random"`` draws
    it uniformly from the family's range (uninformative: the teacher's regime).

    ``layouts``: ``"shipped"`` (every distractor in the shipped layout: the draws the shipped
    models were trained on) or ``"varied"``: each distractor-carrying row (numberless ones
    included) draws its position (shipped or moved) and count (1 or 2) uniformly, from a stream
    of its own, and records its ``layout``. In-topic sentences are never in the mix.
    """
    if distractor not in ("biased", "random"):
        raise ValueError(f"distractor must be 'biased' or 'random', got {distractor!r}")
    if layouts not in ("shipped", "varied"):
        raise ValueError(f"layouts must be 'shipped' or 'varied', got {layouts!r}")
    fam = get_family(family)
    stream = f"pretrain-{distractor}-{bias}" + ("-varied" if layouts == "varied" else "")
    if layouts == "varied":
        for name in VARIED_LAYOUTS:
            fam.check_layout(name)
    rng = _rng(family, stream, seed)
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
        layout = None
        if layouts == "varied" and variant != "clean":
            position, count = rng.choice(("shipped", "moved")), rng.choice((1, 2))
            layout = {("shipped", 1): "shipped", ("moved", 1): "moved",
                      ("shipped", 2): "two", ("moved", 2): "two_moved"}[position, count]
        rows.append(make_sample(fam, rng, variant, f"{family}-pretrain-s{seed}-{i:06d}",
                                "pretrain", layout))
    return rows
