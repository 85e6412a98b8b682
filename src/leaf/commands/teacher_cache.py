"""``leaf teacher-cache``: run the teacher once and keep its top-k logits for distillation."""

from __future__ import annotations

NAME = "teacher-cache"
HELP = "precompute the teacher's top-k logits on the training rows for `leaf distill`"
DESCRIPTION = """\
Reads  --data counterfactuals.jsonl (the file `leaf distill` trains on) and the teacher.
Writes --out DIR: meta.json, index.jsonl (one entry per row) and shard-*.safetensors holding,
       for every target token, the teacher's K largest logits and their ids.

Rows are rendered with the student's tokenizer and chat template (--student; default the
teacher's) and the same --max-length / --system-prompt as the training config, so that the
cache matches what `leaf distill` feeds the student; training checks this row by row.
Point the distillation config at it with `teacher_cache: DIR`. The teacher distribution is then
approximated by the softmax over its top K logits (renormalised top-k). Rerunning the same
command resumes an interrupted cache."""


def add_arguments(parser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher model directory or hub id")
    parser.add_argument("--data", required=True, help="counterfactuals.jsonl to cache")
    parser.add_argument("--out", required=True, help="output directory of the cache")
    parser.add_argument("--top-k", type=int, default=64, help="logits kept per token (64)")
    parser.add_argument("--student", default=None,
                        help="student model: its tokenizer renders the rows and its logit width "
                             "bounds the ids (default: the teacher's)")
    parser.add_argument("--max-length", type=int, default=4096,
                        help="longest sequence in tokens (as in the distill config)")
    parser.add_argument("--system-prompt", default=None, help="as in the distill config")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", default="auto",
                        choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--device-map", default=None,
                        help="e.g. auto to spread a large teacher over the GPUs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def run(args) -> int:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from leaf.distill.cache import write_teacher_cache
    from leaf.distill.data import DistillDataset
    from leaf.distill.recipe import load_teacher
    from leaf.errors import LeafError

    if args.top_k < 1:
        raise LeafError("--top-k must be at least 1")
    source = args.student or args.teacher
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = AutoConfig.from_pretrained(source).vocab_size
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = load_teacher(args.teacher, tokenizer, vocab, args.dtype, args.device_map,
                           None if args.device_map else device)
    dataset = DistillDataset(args.data, tokenizer, args.max_length, args.system_prompt)
    out = write_teacher_cache(teacher, tokenizer, dataset, args.out, args.top_k,
                              teacher_name=args.teacher, vocab_size=vocab,
                              batch_size=args.batch_size)
    print(f"cached the teacher's top-{args.top_k} logits for {len(dataset)} rows in {out}")
    return 0
