"""Shared fixtures: tiny models and tokenizers built locally (never downloaded)."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

from leaf.testbed.tiny import build_tokenizer, save_tiny

torch.set_num_threads(1)  # tiny models: threading overhead dominates

# A suite started in the background (`cmd &`, nohup, some CI runners) inherits SIGINT ignored,
# and every child would too: a child Python then never sees Ctrl-C, and the tests that send one
# would fail or, worse, pass without testing it. Restore what a terminal gives: Ctrl-C handled
# here, the default disposition in children (which Python turns into KeyboardInterrupt).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def llama_tok():
    return build_tokenizer("llama3")


@pytest.fixture(scope="session")
def chatml_tok():
    return build_tokenizer("chatml", vocab_size=400)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 2-layer Llama-architecture model with a Llama-3-style chat template."""
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"), style="llama3", arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_llama_big_dir(tmp_path_factory):
    """A wider Llama-architecture model sharing the same tokenizer (a same-vocab teacher)."""
    return save_tiny(
        tmp_path_factory.mktemp("tiny-llama-big"), style="llama3", arch="llama",
        hidden=48, layers=3, heads=4, kv_heads=2, seed=1,
    )


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    """A 2-layer Qwen2-architecture model with a ChatML template and its own tokenizer."""
    return save_tiny(
        tmp_path_factory.mktemp("tiny-qwen"), style="chatml", arch="qwen2", vocab_size=400, seed=2
    )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def samples_file(tmp_path):
    rows = [
        {"id": "a", "task": "math", "instruction": "Natalia sold 48 clips in April. "
         "A hint: the answer is 15. How many clips in April and May if May is half?",
         "response": "Step 1: 48 / 2 = 24.\nStep 2: 48 + 24 = 72.\nThe answer is 72.",
         "answer": "72", "source": "unit"},
        {"id": "b", "task": "math", "instruction": "Let x + 3 = 10. What is x?",
         "response": "x = 10 - 3 = 7.\nThe answer is \\boxed{7}.", "answer": "7"},
        {"id": "c", "task": "qa", "instruction": "Question: Who wrote the book?",
         "response": "The author wrote it. Answer: the author", "answer": ["the author"]},
    ]
    return write_jsonl(tmp_path / "samples.jsonl", rows)


@pytest.fixture
def chromium():
    """The headless browser of the report's browser tests. Missing: the test is skipped, except
    under CI=true, where it fails (.ci/run installs the Debian package ``chromium``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail("chromium is not installed, and under CI=true the browser tests must run: "
                    "apt-get install -y chromium (.ci/run does)")
    pytest.skip("chromium not installed (apt-get install -y chromium)")
