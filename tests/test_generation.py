"""Generation on a tiny random Llama: greedy determinism, batching, padding, stops, prefixes."""

from __future__ import annotations

import pytest
import torch

from leaf.data.templates import prompt_text
from leaf.errors import LeafError
from leaf.evaluate.generation import (
    GenerationSettings,
    HFGenerator,
    left_pad,
    make_generator,
    stop_token_ids,
)
from leaf.models import load_model, load_tokenizer, resolve_device
from leaf.testbed.tiny import build_tokenizer

INSTRUCTIONS = [
    "What is 2 + 2?",
    "Natalia sold 48 clips in April and half as many in May. How many clips in total?",
    "hi",
    "Let x + 3 = 10. What is x? Step 1: compute 12 * 3 = 36.",
    "Who wrote the novel?",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy machine are 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def loaded(one_thread, tiny_llama_dir):
    return load_model(tiny_llama_dir, device="cpu"), load_tokenizer(tiny_llama_dir)


def gen(loaded, **kw):
    model, tok = loaded
    settings = GenerationSettings(**{"max_new_tokens": 10, "progress": False, **kw})
    return HFGenerator(model, tok, settings)


def test_returns_one_string_per_instruction_and_is_deterministic(loaded):
    g = gen(loaded, batch_size=4)
    first = g.generate(INSTRUCTIONS)
    assert len(first) == len(INSTRUCTIONS) and all(isinstance(t, str) for t in first)
    assert any(first)
    assert g.generate(INSTRUCTIONS) == first


def test_batched_equals_one_at_a_time(loaded):
    batched = gen(loaded, batch_size=5).generate(INSTRUCTIONS)
    single = [gen(loaded, batch_size=1).generate([i])[0] for i in INSTRUCTIONS]
    assert batched == single


def test_only_new_text_is_returned(loaded):
    model, tok = loaded
    out = gen(loaded, max_new_tokens=6).generate(INSTRUCTIONS[:1])[0]
    ids = tok(prompt_text(tok, INSTRUCTIONS[0]), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(**ids, max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = ref[0, ids["input_ids"].shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    assert out == tok.decode(new, skip_special_tokens=True)


def test_left_padding_puts_prompts_at_the_end():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_tokenizer_pads_left(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_stops_at_end_of_turn(loaded):
    """Force <|eot_id|> as the 3rd new token: output is the first two tokens, no stop text."""
    model, tok = loaded
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    free = gen(loaded, max_new_tokens=8).generate(INSTRUCTIONS[:2])
    calls = {"n": 0}

    def boost(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:  # prefill -> token 1, step -> token 2, step -> token 3
            output = output.clone()
            output[..., eot] = 1e4
        return output

    handle = model.lm_head.register_forward_hook(boost)
    try:
        stopped = gen(loaded, max_new_tokens=8, batch_size=2).generate(INSTRUCTIONS[:2])
    finally:
        handle.remove()
    for full, short in zip(free, stopped, strict=True):
        assert "<|eot_id|>" not in short
        assert full.startswith(short) and len(short) < len(full)
        assert len(tok(short, add_special_tokens=False)["input_ids"]) <= 2


def test_answers_say_which_were_cut_at_max_new_tokens(loaded):
    """In one batch, the row that ends (forced <|eot_id|> as its 3rd token) is complete and the
    one still going at max_new_tokens is cut; generate() returns the same texts."""
    model, tok = loaded
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    calls = {"n": 0}

    def boost(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:
            output = output.clone()
            output[0, ..., eot] = 1e4  # batch row 0: the longer prompt (sorted by length)
        return output

    handle = model.lm_head.register_forward_hook(boost)
    try:
        answers = gen(loaded, max_new_tokens=6, batch_size=2).answers(INSTRUCTIONS[:2])
    finally:
        handle.remove()
    assert [a.truncated for a in answers] == [True, False]
    texts = gen(loaded, max_new_tokens=6).generate(INSTRUCTIONS[:1])
    assert texts == [answers[0].text]


def test_vllm_answers_are_cut_when_its_finish_reason_is_length(monkeypatch, tiny_llama_dir):
    """vLLM says why each output ended: "length" is a cut answer, "stop" a finished one."""
    import sys
    import types

    class Out:
        def __init__(self, text, reason):
            self.text, self.finish_reason = text, reason

    class LLM:
        def generate(self, prompts, params, use_tqdm=False):
            assert params["max_tokens"] == 5
            return [types.SimpleNamespace(outputs=[Out("1 + 2 = 3", "stop")]),
                    types.SimpleNamespace(outputs=[Out("The sum of", "length")])]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=dict))
    from leaf.evaluate.generation import VLLMGenerator

    generator = VLLMGenerator.__new__(VLLMGenerator)  # no engine: its outputs are given
    generator.tokenizer = load_tokenizer(tiny_llama_dir)
    generator.settings = GenerationSettings(max_new_tokens=5, progress=False)
    generator.stop_ids = [0]
    generator.llm = LLM()
    got = generator.answers(["a", "b"])
    assert [(a.text, a.truncated) for a in got] == [("1 + 2 = 3", False), ("The sum of", True)]


def test_stop_ids_include_eos_and_end_of_turn():
    tok = build_tokenizer("chatml", vocab_size=400)
    tok.eos_token = "<|endoftext|>"
    ids = stop_token_ids(tok)
    assert tok.convert_tokens_to_ids("<|endoftext|>") in ids
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids


def test_prefix_continuation(loaded):
    """With a prefix the model continues prompt + prefix; mixed batches agree with singles."""
    model, tok = loaded
    prefix = "Step 1: 48 / 2 = 24."
    out = gen(loaded, max_new_tokens=6).generate(INSTRUCTIONS[1:2], [prefix])[0]
    text = prompt_text(tok, INSTRUCTIONS[1]) + prefix
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(**ids, max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = ref[0, ids["input_ids"].shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    assert out == tok.decode(new, skip_special_tokens=True)

    prefixes = [None, prefix, "", "x ="]
    mixed = gen(loaded, batch_size=4).generate(INSTRUCTIONS[:4], prefixes)
    single = [gen(loaded).generate([i], [p])[0] for i, p in zip(INSTRUCTIONS[:4], prefixes)]
    assert mixed == single


def test_sampling_needs_temperature(loaded):
    with pytest.raises(LeafError, match="temperature"):
        gen(loaded).generate_n(INSTRUCTIONS[:1], n=2)
    outs = gen(loaded, temperature=1.0, seed=3).generate_n(INSTRUCTIONS[:2], n=3)
    assert [len(o) for o in outs] == [3, 3]
    assert gen(loaded, temperature=1.0, seed=3).generate_n(INSTRUCTIONS[:2], n=3) == outs


def test_missing_vllm_is_one_clear_error(tiny_llama_dir):
    pytest.importorskip("leaf")  # always present; vllm must be absent for this test
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(LeafError, match="vllm"):
        make_generator(str(tiny_llama_dir), backend="vllm")


def test_model_loading_errors(tmp_path, tiny_llama_dir):
    with pytest.raises(LeafError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeafError, match="not a model directory"):
        load_model(tmp_path / "empty")
    with pytest.raises(LeafError, match="backend"):
        make_generator(str(tiny_llama_dir), backend="tgi")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_load_tokenizer_sets_missing_pad_to_eos(tmp_path):
    tok = build_tokenizer("chatml", vocab_size=400)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert loaded.padding_side == "left"


def test_cli_help_imports_no_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, leaf.cli; leaf.cli.build_parser(); "
            "print([m for m in ('torch', 'transformers', 'vllm', 'math_verify') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
