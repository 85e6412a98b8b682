"""GGUF input: a tiny Llama written as a .gguf file (locally, F32) loads everywhere a model goes
in, with its tokenizer and chat template; `leaf convert-model` writes a plain HF directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import write_jsonl
from leaf.cli import main
from leaf.errors import LeafError
from leaf.models import gguf_source, load_model, load_tokenizer
from leaf.testbed.tiny import build_model, build_tokenizer
from leaf.testbed.tiny_gguf import write_llama_gguf

MESSAGES = [{"role": "user", "content": "Let x + 3 = 10. What is x?"}]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(source model, its tokenizer, the .gguf path): ChatML template, like SmolLM2."""
    tok = build_tokenizer("chatml", vocab_size=400)
    model = build_model(tok, "llama", seed=3).eval()
    path = write_llama_gguf(model, tok, tmp_path_factory.mktemp("gguf") / "tiny.Q.gguf")
    return model, tok, path


def _prompt_ids(tok):
    return tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt",
                                   return_dict=True)["input_ids"]


def test_file_and_directory_load_with_tokenizer_and_template(tiny_gguf):
    model, tok, path = tiny_gguf
    for source in (path, path.parent):  # the file, or the directory holding it
        gtok = load_tokenizer(source)
        gmodel = load_model(source, device="cpu")
        assert gtok.chat_template == tok.chat_template
        ids = _prompt_ids(gtok)
        assert ids.tolist() == _prompt_ids(tok).tolist()
        with torch.no_grad():
            assert torch.allclose(gmodel(ids).logits, model(ids).logits, atol=1e-5)
        # rebuilt as a plain model: trainable and savable
        assert getattr(gmodel.config, "quantization_config", None) is None


def test_convert_model_writes_a_directory_plain_transformers_loads(tiny_gguf, tmp_path):
    model, tok, path = tiny_gguf
    out = tmp_path / "hf"
    assert main(["convert-model", str(path), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    loaded_tok = AutoTokenizer.from_pretrained(out)
    assert loaded_tok.chat_template == tok.chat_template
    ids = _prompt_ids(loaded_tok)
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    # a second conversion into the same non-empty directory is refused, nothing touched
    before = sorted(p.name for p in out.iterdir())
    assert main(["convert-model", str(path), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == before


def test_detect_takes_gguf_files(tiny_gguf, samples_file, tmp_path):
    _, _, path = tiny_gguf
    out = tmp_path / "scores.jsonl"
    assert main(["detect", "--teacher", str(path), "--student", str(path.parent), "--data",
                 str(samples_file), "--out", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[0]["unit_kind"] == "token"


def test_missing_gguf_package_is_one_line_naming_the_extra(tiny_gguf, samples_file, tmp_path,
                                                           monkeypatch, capsys):
    import transformers.utils

    _, _, path = tiny_gguf
    monkeypatch.setattr(transformers.utils, "is_gguf_available", lambda *a, **k: False)
    out = tmp_path / "scores.jsonl"
    assert main(["detect", "--teacher", str(path), "--student", str(path), "--data",
                 str(samples_file), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "leaf-distill[gguf]"' in err and err.count("\n") == 1
    assert not out.exists()


def test_ambiguous_or_wrong_sources_are_refused(tiny_gguf, tmp_path, samples_file, capsys):
    _, _, path = tiny_gguf
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(path, two / "a.gguf")
    shutil.copy(path, two / "b.gguf")
    with pytest.raises(LeafError, match="2 .gguf files"):
        gguf_source(two)
    assert gguf_source(two / "a.gguf") == (str(two), "a.gguf")
    assert gguf_source(samples_file) is None  # a file that is not GGUF
    assert main(["convert-model", str(samples_file), "--out", str(tmp_path / "x")]) == 2
    assert "not a .gguf file" in capsys.readouterr().err


def test_plain_kd_heals_a_gguf_student_from_plain_samples(tiny_gguf, tmp_path):
    """The healing recipe of docs/pruning.md section 8: plain samples (no `kind`: originals),
    lambda 1, no counterfactuals; a GGUF student trains and is saved as a normal directory."""
    from leaf.distill.config import DistillArguments
    from leaf.distill.recipe import train

    _, _, path = tiny_gguf
    rows = [{"id": f"s{i}", "task": "math", "instruction": f"What is {i} + 1?",
             "response": f"{i} + 1 = {i + 1}. The answer is {i + 1}.", "answer": str(i + 1)}
            for i in range(4)]
    data = write_jsonl(tmp_path / "samples.jsonl", rows)
    args = DistillArguments(
        output_dir=str(tmp_path / "out"), teacher_model=str(path), student_model=str(path),
        train_file=str(data), hybrid_lambda=1.0, use_counterfactuals=False, use_cpu=True,
        per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, save_strategy="no",
        report_to="none", disable_tqdm=True, max_length=128, dataloader_num_workers=0)
    trainer = train(args)
    assert dict(trainer.train_dataset.stats) == {"original": 4}
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert saved.config.model_type == "llama"
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template


def test_eval_and_attention_take_a_gguf_model(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    bench = write_jsonl(tmp_path / "bench.jsonl", [
        {"id": "b", "task": "math", "instruction": "Let x + 3 = 10. What is x?", "response": "",
         "answer": "7"}])
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(path), "--bench", str(bench), "--out", str(out),
                 "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n"] == 1
    original = {"id": "b", "origin_id": "b", "kind": "original", "level": "instruction",
                "task": "math", "instruction": "Let x + 3 = 10. What is x?", "response": "x = 7.",
                "answer": "7", "pruned": [], "verified": None}
    cf = write_jsonl(tmp_path / "cf.jsonl", [original, {
        **original, "id": "b#i0", "kind": "counterfactual", "pruned": [[6, 10]],
        "instruction": "Let x = 10. What is x?", "verified": True}])
    assert main(["attention", "--model", str(path), "--data", str(cf), "--spans", "pruned",
                 "--out", str(tmp_path / "att.json"), "--device", "cpu"]) == 0
    assert (tmp_path / "att.json").is_file()
