"""`leaf make-student`: a student made from a teacher (fewer layers, rounded weights) that every
leaf command loads; quantisation moves each weight by at most half its group's step."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from leaf.cli import build_parser, main
from leaf.distill.shrink import drop_layers, fake_quantise, layers_to_keep
from leaf.errors import LeafError
from leaf.models import load_model, load_tokenizer
from leaf.stages import StudentOptions, make_student
from leaf.testbed.tiny import build_model, build_tokenizer
from leaf.testbed.tiny_gguf import write_llama_gguf


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _generates(path):
    tok = load_tokenizer(path)
    model = load_model(path, device="cpu")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    runs = [model.generate(**ids, max_new_tokens=5, do_sample=False, use_cache=cache,
                           output_scores=True, return_dict_in_generate=True)
            for cache in (True, False)]
    assert runs[0].sequences.shape[1] == ids["input_ids"].shape[1] + 5
    # the KV cache indexes layers by number: with it and without it, the same scores
    for with_cache, without in zip(runs[0].scores, runs[1].scores):
        assert torch.allclose(with_cache, without, atol=1e-4)
    return model


def test_layers_to_keep():
    assert layers_to_keep(30, every=2) == list(range(0, 30, 2))
    assert layers_to_keep(5, first=2, last=1) == [0, 1, 4]
    assert layers_to_keep(5, first=9) == [0, 1, 2, 3, 4]
    assert layers_to_keep(3) == [0, 1, 2]
    with pytest.raises(LeafError):
        layers_to_keep(4, first=0, last=0)


def test_keep_every_second_layer_keeps_those_layers_exactly(tiny_llama_big_dir, tmp_path):
    out = tmp_path / "student"
    summary = make_student(tiny_llama_big_dir, out, StudentOptions(keep_every=2))
    assert summary.kept == [0, 2] and summary.layers_before == 3 and summary.quantised == 0
    assert "2 of 3 decoder layers kept (0, 2)" in str(summary)
    model = _generates(out)
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    teacher, student = _weights(tiny_llama_big_dir), _weights(out)
    for name, w in student.items():
        old = name.replace("layers.1.", "layers.2.")  # student layer 1 is teacher layer 2
        assert torch.equal(w, teacher[old]), name
    assert not any("layers.2." in k for k in student)


def test_drop_layers_renumbers_the_layers_and_cuts_the_config(tiny_llama_big_dir):
    model = load_model(tiny_llama_big_dir, device="cpu")
    model.config.layer_types = ["full_attention"] * 3
    drop_layers(model, [0, 2])
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    assert model.config.num_hidden_layers == 2 and len(model.config.layer_types) == 2


def test_bits_move_each_weight_by_at_most_half_a_step(tiny_qwen_dir, tmp_path):
    out = tmp_path / "student"
    bits, group = 4, 16
    summary = make_student(tiny_qwen_dir, out, StudentOptions(bits=bits, group=group))
    assert summary.quantised == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    model = _generates(out)
    assert model.config.num_hidden_layers == 2
    teacher, student = _weights(tiny_qwen_dir), _weights(out)
    assert teacher.keys() == student.keys()
    changed = 0
    for name, w in teacher.items():
        s = student[name]
        if ".layers." in name and name.endswith("proj.weight"):
            rows, cols = w.shape
            groups = w.reshape(rows, cols // group, group)
            step = groups.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
            moved = (s - w).reshape(rows, cols // group, group).abs()
            assert (moved <= step / 2 + 1e-6).all(), name
            # at most 2**bits levels in each group
            levels = torch.round(s.reshape(rows, -1, group) / step)
            assert levels.abs().max() <= 2 ** (bits - 1)
            changed += int((moved > 0).any())
        else:  # embeddings, norms, biases, the output layer: untouched
            assert torch.equal(s, w), name
    assert changed == summary.quantised


def test_fake_quantise_per_row_and_a_group_that_does_not_divide():
    w = torch.tensor([[0.6, -1.0, 0.26, 0.0]])  # 2 bits: -2, -1, 0, 1 steps of 1.0
    assert torch.equal(fake_quantise(w, 2, 0), torch.tensor([[1.0, -1.0, 0.0, 0.0]]))
    with pytest.raises(LeafError, match="does not divide"):
        fake_quantise(w, 4, 3)


def test_a_gguf_teacher_and_both_ends(tmp_path):
    tok = build_tokenizer("chatml", vocab_size=400)
    teacher = build_model(tok, "llama", layers=4, seed=3).eval()
    gguf = write_llama_gguf(teacher, tok, tmp_path / "teacher.gguf")
    out = tmp_path / "student"
    assert main(["make-student", str(gguf), "--out", str(out), "--keep-first", "1",
                 "--keep-last", "1", "--bits", "8", "--group", "0"]) == 0
    model = _generates(out)
    assert model.config.num_hidden_layers == 2
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()


def test_help_documents_every_option_and_bad_input_is_one_line(tiny_qwen_dir, tmp_path, capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["make-student"]
    for action in sub._actions:
        assert action.help and len(action.help) > 15, action.option_strings
    flags = {s for a in sub._actions for s in a.option_strings}
    assert {"--bits", "--group", "--keep-every", "--keep-first", "--keep-last", "--dtype",
            "--out"} <= flags
    out = tmp_path / "s"
    assert main(["make-student", str(tiny_qwen_dir), "--out", str(out)]) == 2
    assert "--bits" in capsys.readouterr().err
    assert main(["make-student", str(tiny_qwen_dir), "--out", str(out), "--keep-every", "2",
                 "--keep-last", "1"]) == 2
    err = capsys.readouterr().err
    assert "--keep-every" in err and "--keep-last" in err
    assert main(["make-student", str(tiny_qwen_dir), "--out", str(out), "--bits", "4",
                 "--group", "5"]) == 2
    err = capsys.readouterr().err
    assert "does not divide" in err and "Traceback" not in err and not out.exists()
    out.mkdir()
    (out / "x").write_text("x")
    assert main(["make-student", str(tiny_qwen_dir), "--out", str(out), "--bits", "4"]) == 2
    assert "not empty" in capsys.readouterr().err
