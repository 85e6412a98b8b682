"""Scoring samples: teacher, student and samples in, ``scores.jsonl`` rows out (the core of
``leaf detect``; :mod:`leaf.detect.scores_file` reads the rows back).

For every sample and every scored text (a *job*):

- level ``instruction`` (segment 0): the instruction is scored, the loss is the mean
  cross-entropy of the whole gold response given the prompt;
- level ``response`` (segments k = 1 .. K-1): the response prefix ``response[:b_k]`` is scored,
  the loss is the mean cross-entropy of the rest ``response[b_k:]`` (and the end-of-turn marker)
  given the prompt and the prefix; ``b_k`` comes from :func:`leaf.detect.segments.segment_boundaries`
  (its token-count fallback uses the student's tokenizer), so both models see the same cut.

Each model renders the job with its own chat template and tokenizer, computes the saliency
``g`` and the per-token NLL of every token in one forward/backward pass
(:func:`leaf.detect.saliency.saliency_and_nll`), and its tokens of the scored text are mapped to
character spans of that text. The two models are then compared on shared units
(:mod:`leaf.detect.units`: tokens when both tokenise the text alike, words otherwise), and each row
carries ``teacher = minmax(g_T)``, ``student = minmax(g_S)``,
``diff = minmax(teacher - student)`` (:mod:`leaf.detect.thresholds`), the raw norms and the student's
per-unit NLL. The row format is documented in docs/pruning.md.

**The end of the instruction.** With ``skip_last = N`` the last N tokens of the instruction are
not scored: they are no units and take no part in the normalisation (response prefixes are
scored whole). A chat model's gradient is largest on the tokens right before the template's end
of turn whatever they say, so without the skip the instruction's last token (often the question
mark) dominates the student's normalised saliency and is what the rule flags.
docs/REAL_MODEL.md measures this; the released code of the paper's authors never scores the last
15 tokens of an instruction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from leaf.data.templates import encode
from leaf.detect import units as unitlib
from leaf.detect.saliency import IGNORE_INDEX, pad_batch, saliency_and_nll
from leaf.detect.segments import DEFAULT_SEGMENTS, segment_boundaries
from leaf.detect.thresholds import minmax, normalised_difference

LEVELS = ("instruction", "response", "both")


@dataclass
class Scorer:
    """A causal LM and its (fast) tokenizer."""

    model: Any
    tokenizer: Any


@dataclass
class Job:
    """One scored text of one sample."""

    sample_id: str
    level: str  # "instruction" | "response"
    segment: int
    prefix_end: int | None
    instruction: str
    response: str

    @property
    def text(self) -> str:
        """The scored text that unit spans index."""
        if self.level == "instruction":
            return self.instruction
        return self.response[: self.prefix_end]


@dataclass
class TokenScores:
    """One model's per-token results on a job: spans in the scored text, ``g`` and NLL."""

    spans: list[tuple[int, int]]
    saliency: list[float]
    nll: list[float]


def _token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(s, e) for s, e in enc["offset_mapping"] if e > s]


def compares_on_words(text: str, tokenizer, other_tokenizer) -> bool:
    """True when two tokenizers split ``text`` differently, so detection compares on words."""
    if other_tokenizer is None or other_tokenizer is tokenizer:
        return False
    return not unitlib.same_segmentation(_token_spans(tokenizer, text),
                                         _token_spans(other_tokenizer, text))


def plan_jobs(
    sample: dict[str, Any], level: str = "instruction", segments: int = DEFAULT_SEGMENTS,
    tokenizer=None, teacher_tokenizer=None,
) -> list[Job]:
    """The jobs of one sample: segment 0 (instruction) and/or segments 1..K-1 (response).

    ``tokenizer`` is the student's (the token-count fallback of the response boundaries);
    with ``teacher_tokenizer`` given and splitting the response differently, the boundaries fall
    between words, the units detection then compares on."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    inst, resp = sample["instruction"], sample["response"]
    jobs = []
    if level in ("instruction", "both"):
        jobs.append(Job(sample["id"], "instruction", 0, None, inst, resp))
    if level in ("response", "both"):
        words = tokenizer is not None and compares_on_words(resp, tokenizer, teacher_tokenizer)
        for k, cut in enumerate(segment_boundaries(resp, segments, tokenizer, words), start=1):
            jobs.append(Job(sample["id"], "response", k, cut, inst, resp))
    return jobs


def _encode(tokenizer, job: Job):
    target = 0 if job.level == "instruction" else job.prefix_end
    enc = encode(tokenizer, job.instruction, job.response, target_start=target)
    labels = [t if m else IGNORE_INDEX for t, m in zip(enc.input_ids, enc.label_mask())]
    limit = None if job.level == "instruction" else job.prefix_end
    return enc, labels, enc.units(job.level, limit)


def token_scores(scorer: Scorer, jobs: list[Job], batch_size: int = 8) -> list[TokenScores]:
    """Run one model over ``jobs`` in length-sorted padded batches."""
    encoded = [_encode(scorer.tokenizer, job) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: len(encoded[i][0].input_ids))
    out: list[TokenScores | None] = [None] * len(jobs)
    pad_id = scorer.tokenizer.pad_token_id or 0
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, mask, labels = pad_batch(
            [encoded[i][0].input_ids for i in idx], [encoded[i][1] for i in idx], pad_id
        )
        res = saliency_and_nll(scorer.model, ids, mask, labels)
        sal, nll = res.saliency.cpu().tolist(), res.nll.cpu().tolist()
        for row, i in enumerate(idx):
            units = encoded[i][2]
            out[i] = TokenScores(
                spans=[(s, e) for _, s, e in units],
                saliency=[sal[row][t] for t, _, _ in units],
                nll=[nll[row][t] for t, _, _ in units],
            )
    return out  # type: ignore[return-value]


def scored_end(student: TokenScores, skip_last: int) -> int | None:
    """Where the scored part of the text ends when its last ``skip_last`` tokens (the student's)
    are never scored: the start of the ``skip_last``-th token from the end; None when nothing is
    skipped; 0 when the text has no more tokens than that."""
    if skip_last <= 0:
        return None
    starts = [s for s, _ in unitlib.merge_token_spans(student.spans)]
    return starts[-skip_last] if len(starts) > skip_last else 0


def compare(job: Job, teacher: TokenScores, student: TokenScores,
            skip_last: int = 0) -> dict[str, Any] | None:
    """The scores row of one job; None when the scored text has no unit.

    With ``skip_last`` = N > 0 the instruction's last N tokens (the student's tokenisation) are
    no units: every unit ending after the N-th last token starts is dropped before normalisation.
    Response prefixes are scored whole (their rows say ``skip_last: 0``).
    """
    text = job.text
    words = not unitlib.same_segmentation(teacher.spans, student.spans)
    units = unitlib.word_spans(text) if words else unitlib.merge_token_spans(student.spans)
    if job.level != "instruction":
        skip_last = 0
    end = scored_end(student, skip_last)
    if end is not None:
        units = [u for u in units if u[1] <= end]
    if not units:
        return None
    t_raw, _ = unitlib.pool(text, teacher.spans, teacher.saliency, None, units, words)
    s_raw, s_nll = unitlib.pool(text, student.spans, student.saliency, student.nll, units, words)
    return {
        "id": job.sample_id,
        "level": job.level,
        "segment": job.segment,
        "field": job.level,
        "prefix_end": job.prefix_end,
        "unit_kind": "word" if words else "token",
        "units": [[s, e] for s, e in units],
        "teacher": minmax(t_raw).tolist(),
        "student": minmax(s_raw).tolist(),
        "diff": normalised_difference(t_raw, s_raw).tolist(),
        "teacher_raw": t_raw,
        "student_raw": s_raw,
        "student_nll": s_nll,
        "skip_last": skip_last,
    }


def score_samples(
    teacher: Scorer,
    student: Scorer,
    samples: Iterable[dict[str, Any]],
    level: str = "instruction",
    segments: int = DEFAULT_SEGMENTS,
    batch_size: int = 8,
    chunk: int | None = None,
    skip_last: int = 0,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(sample id, rows)`` per sample, in input order.

    ``skip_last``: tokens at the end of every instruction that are not scored (see the module
    docstring). Samples are taken ``chunk`` at a time (default ``4 * batch_size``); within a chunk the jobs
    are sorted by length so batches carry little padding. A sample whose texts give no unit
    (for example a response too short to split) yields an empty list.
    """
    chunk = chunk or 4 * batch_size
    buffer: list[dict[str, Any]] = []

    def flush() -> Iterator[tuple[str, list[dict[str, Any]]]]:
        plans = [plan_jobs(s, level, segments, student.tokenizer, teacher.tokenizer)
                 for s in buffer]
        jobs = [j for plan in plans for j in plan]
        t = token_scores(teacher, jobs, batch_size) if jobs else []
        s = token_scores(student, jobs, batch_size) if jobs else []
        pos = 0
        for sample, plan in zip(buffer, plans):
            rows = []
            for job in plan:
                row = compare(job, t[pos], s[pos], skip_last)
                pos += 1
                if row is not None:
                    rows.append(row)
            yield sample["id"], rows

    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= chunk:
            yield from flush()
            buffer = []
    if buffer:
        yield from flush()
