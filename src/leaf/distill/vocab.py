"""Teacher/student vocabulary compatibility for logit distillation.

Token-level KL compares ``p_T(v)`` and ``p_S(v)`` id by id, so every id the student can emit
must mean the same string for the teacher. The teacher may know more ids (its extra logits are
dropped, see :mod:`leaf.distill.losses`); it may not know fewer, and no shared id may differ.
"""

from __future__ import annotations

from leaf.errors import LeafError


def check_shared_vocab(
    student_tokenizer,
    teacher_tokenizer,
    student_vocab_size: int | None = None,
    teacher_vocab_size: int | None = None,
) -> int:
    """Check that the teacher's ids ``[0, len(student_tokenizer))`` encode the same strings.

    ``*_vocab_size`` are the models' logit widths (often padded beyond the tokenizer, e.g.
    Qwen2.5: 151936 for 1.5B, 152064 for 72B). Returns the number of ids compared. Raises one
    :class:`LeafError` describing the first disagreement otherwise.
    """
    n_student, n_teacher = len(student_tokenizer), len(teacher_tokenizer)
    if n_teacher < n_student:
        raise LeafError(
            f"the teacher's tokenizer has {n_teacher} tokens, fewer than the student's "
            f"{n_student}; logit distillation needs the teacher to cover every student id"
        )
    ids = list(range(n_student))
    student_tokens = student_tokenizer.convert_ids_to_tokens(ids)
    teacher_tokens = teacher_tokenizer.convert_ids_to_tokens(ids)
    bad = [i for i, (a, b) in enumerate(zip(student_tokens, teacher_tokens)) if a != b]
    if bad:
        i = bad[0]
        raise LeafError(
            f"teacher and student tokenizers disagree on {len(bad)} of the {n_student} shared "
            f"ids (first: id {i} is {student_tokens[i]!r} for the student, "
            f"{teacher_tokens[i]!r} for the teacher); logit distillation needs one vocabulary"
        )
    if student_vocab_size is not None and student_vocab_size < n_student:
        raise LeafError(
            f"the student model has {student_vocab_size} logits but its tokenizer "
            f"{n_student} tokens"
        )
    if (
        student_vocab_size is not None
        and teacher_vocab_size is not None
        and teacher_vocab_size < student_vocab_size
    ):
        raise LeafError(
            f"the teacher model has {teacher_vocab_size} logits, fewer than the student's "
            f"{student_vocab_size}"
        )
    return n_student
