"""One command-line convention across subcommands: every option has help, the same --device and
--dtype everywhere, testbed model shorthands, positional `leaf distill CONFIG`, the model card,
training logs as numbers, `leaf run`'s done lines and a stages.log without redraw runs."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from distill_rows import training_rows
from leaf.cli import build_parser, main

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_subcommand_has_help_and_its_default():
    subs = subparsers()
    assert {"run", "distill", "detect", "teacher-cache", "report", "testbed"} <= set(subs)
    for name, sub in subs.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, \
                f"leaf {name} {'/'.join(action.option_strings) or action.dest}: no help"
            shown = formatter._get_help_string(action)
            if action.option_strings and action.default not in (None, False, []):
                d = action.default
                forms = {str(d), *([f"{d:g}"] if isinstance(d, int | float) else [])}
                assert "default" in shown or any(f"({f})" in shown for f in forms), \
                    f"leaf {name} {action.option_strings[0]}: default not shown in {shown!r}"


def test_device_and_dtype_are_the_same_flags_everywhere():
    subs = subparsers()
    with_device = {n: s for n, s in subs.items()
                   if any("--device" in a.option_strings for a in s._actions)}
    assert {"detect", "attention", "teacher-cache", "eval", "screen", "prune"} <= set(with_device)
    for name, sub in with_device.items():
        acts = {o: a for a in sub._actions for o in a.option_strings}
        assert acts["--device"].default == "auto", name
        assert acts["--dtype"].default == "float32", name
        assert set(acts["--dtype"].choices) == {"float32", "bfloat16", "float16", "auto"}, name
        args = sub.parse_args([*(["--model", "m"] if "--model" in acts else []),
                               "--device", "cuda:1"] + _required(name))
        assert args.device == "cuda:1", name
        with pytest.raises(SystemExit):
            sub.parse_args(["--device", "gpu"] + _required(name))


def _required(name: str) -> list[str]:
    return {"detect": ["--teacher", "t", "--student", "s", "--data", "d", "--out", "o"],
            "attention": ["--data", "d"],
            "teacher-cache": ["--teacher", "t", "--data", "d", "--out", "o"],
            "eval": ["--bench", "b", "--out", "o"],
            "screen": ["--teacher", "t", "--student", "s", "--data", "d", "--out", "o"],
            "prune": ["--data", "d", "--out", "o"]}.get(name, [])


def test_testbed_shorthand_names_a_shipped_checkpoint_on_the_command_line(capsys):
    from leaf.testbed.assets import model_dir

    sub = subparsers()["detect"]
    args = sub.parse_args(["--teacher", "testbed:digit_sum/teacher", "--student",
                           "testbed:digit_sum/student", "--data", "d", "--out", "o"])
    assert args.teacher == str(model_dir("digit_sum", "teacher"))
    assert args.student == str(model_dir("digit_sum", "student"))
    with pytest.raises(SystemExit):
        sub.parse_args(["--teacher", "testbed:nosuch/teacher", "--student", "s", "--data", "d",
                        "--out", "o"])
    assert "nosuch" in capsys.readouterr().err


def test_run_help_lists_the_config_keys_with_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for line in ("prune.tau = 0.1", "screen.batch_size = 64", "distill.hybrid_lambda = 0.5",
                 "counterfactuals.NAME.masking = gradient", "attention.split = test_anti"):
        assert line in out


def test_show_fields_lists_leafs_own_fields_first(capsys):
    assert main(["distill", "--show-fields"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    index = {name: next(i for i, line in enumerate(lines) if line.strip().startswith(name + " "))
             for name in ("teacher_model", "hybrid_lambda", "mixing", "per_device_train_batch_size",
                          "output_dir")}
    assert index["hybrid_lambda"] < 40 and index["teacher_model"] < index["hybrid_lambda"]
    assert max(index["hybrid_lambda"], index["mixing"]) < index["output_dir"]
    assert index["mixing"] < index["per_device_train_batch_size"]


def test_distill_config_is_positional_writes_a_model_card_and_logs_numbers(
        tmp_path, tiny_llama_dir, tiny_llama_big_dir, capsys):
    train_file = write_jsonl(tmp_path / "cf.jsonl", training_rows(4, unverified=False))
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config.update(teacher_model=str(tiny_llama_big_dir), student_model=str(tiny_llama_dir),
                  train_file=str(train_file), hybrid_lambda=0.7, mixing="paired")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "student"
    assert main(["distill", str(path), "--output_dir", str(out), "--max_steps", "2",
                 "--save_strategy", "no", "--logging_steps", "1"]) == 0
    # --config as a flag, before or after the overrides, reads the same file
    args = build_parser().parse_known_args(["distill", "--config", str(path), "--output_dir",
                                            "x"])[0]
    assert args.config_flag == str(path)
    logged = capsys.readouterr()
    assert "{'loss'" not in logged.out + logged.err
    assert "step 1/2  loss " in logged.out + logged.err
    card = (out / "README.md").read_text(encoding="utf-8")
    from leaf import __version__

    for text in (str(tiny_llama_big_dir), str(tiny_llama_dir), str(train_file),
                 "| lambda (hybrid_lambda) | 0.7 |", "| original rows | 4 |",
                 "| counterfactual rows |", f"`{__version__}`"):
        assert text in card, text
    # --config is kept as an alias; both forms at once must agree
    assert main(["distill", str(path), "--config", str(tmp_path / "other.yaml")]) == 2
    assert "two configs" in capsys.readouterr().err
    assert main(["distill"]) == 2
    assert "leaf distill CONFIG.yaml" in capsys.readouterr().err
    assert main(["distill", "--max_steps", "2", str(path)]) == 2
    assert "came after a field" in capsys.readouterr().err


def test_done_lines_give_the_time_and_an_estimate_of_what_is_left(tmp_path):
    from leaf.pipeline.manifest import Manifest
    from leaf.pipeline.runner import Stage, estimate_left, format_seconds, run_stages

    def writer(p):
        return lambda: p.write_text("x")

    stages = [Stage(f"step_{i}", writer(tmp_path / f"o{i}"), {"o": tmp_path / f"o{i}"})
              for i in range(3)]
    lines: list[str] = []
    run_stages(Manifest(tmp_path), stages, log=lines.append)
    done = [line for line in lines if ": done in " in line]
    assert len(done) == 3 and "left" in done[0] and done[-1].endswith("about 0.0 s left")
    est = estimate_left({"distill": [10.0, 20.0], "eval": [1.0]},
                        ["distill_a-s1", "eval_x", "report_y"])
    assert est.seconds == pytest.approx(15 + 1) and est.untimed == 1  # report: not timed yet
    assert estimate_left({}, ["a_1"]).text() == ""  # nothing timed: no number
    assert format_seconds(185) == "3 min 05 s" and format_seconds(4.25) == "4.2 s"


def test_stages_log_keeps_a_progress_bar_as_its_last_state():
    from leaf.pipeline import LineLog

    buf = io.StringIO()
    log = LineLog(buf)
    log.write("start\n")
    for i in range(50):
        log.write(f"\rgenerate: {2 * i}%|")
    log.write("\r" + " " * 30 + "\r")
    log.write("next line\n\rtail 10%\rtail 100%")
    log.close()
    assert buf.getvalue() == "start\ngenerate: 98%|\nnext line\ntail 100%\n"
    assert "\r" not in buf.getvalue()


