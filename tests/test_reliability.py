"""Nothing stale, nothing lost, no tracebacks: resume that knows its input, and bad input,
damaged files, full disks and Ctrl-C each ending in one clear line (exit 2, or 130)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import leaf
import leaf.data.resumable as resumable_module
from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.data.schema import read_samples
from leaf.settings import SettingError

SRC = Path(leaf.__file__).resolve().parents[1]  # the leaf under test, for subprocesses


def text_hash(sample: dict) -> str:
    from leaf.detect.scores_file import text_hash as made_by_leaf

    return made_by_leaf(sample)


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _samples(n: int = 3) -> list[dict]:
    return [{"id": f"s{i}", "task": "math",
             "instruction": f"a = {i} ; b = 3 ; rumor : 7 ; query a + b + c",
             "response": f"{i} + 3 = {i + 3}. The answer is {i + 3}.", "answer": str(i + 3)}
            for i in range(n)]


def _detect(teacher, student, data, out, *extra) -> list[str]:
    return ["detect", "--teacher", str(teacher), "--student", str(student), "--data", str(data),
            "--out", str(out), "--device", "cpu", "--all", *extra]


def _no_scratch(path: Path) -> bool:
    return not list(path.parent.glob(path.name + ".*"))


# ---------------------------------------------------------------------------------------------
# 1. resume that knows its input


def test_detect_rescores_rows_whose_text_changed(tiny_llama_dir, tiny_llama_big_dir, tmp_path,
                                                 capsys):
    v1 = _samples()
    data1 = write(tmp_path / "v1.jsonl", v1)
    out = tmp_path / "scores.jsonl"
    assert main(_detect(tiny_llama_big_dir, tiny_llama_dir, data1, out, "--level", "both")) == 0
    first = {(r["id"], r["segment"]): r for r in read_jsonl(out)}
    assert all(r["text_hash"] == text_hash(v1[int(r["id"][1])]) for r in first.values())
    # v2: same ids, one instruction and one response edited
    v2 = [dict(v1[0], instruction="query a + b + c ; a = 1 ; b = 2"),
          dict(v1[1], response="It is 4, so the answer is 4 and nothing else."), v1[2]]
    data2 = write(tmp_path / "v2.jsonl", v2)
    capsys.readouterr()
    assert main(_detect(tiny_llama_big_dir, tiny_llama_dir, data2, out, "--level", "both")) == 0
    assert "2 scored (2 redone: their text or settings changed), 1 already done" in \
        capsys.readouterr().out
    rows = read_jsonl(out)
    # every row is now the one a fresh run on v2 writes
    fresh = tmp_path / "fresh.jsonl"
    assert main(_detect(tiny_llama_big_dir, tiny_llama_dir, data2, fresh, "--level", "both")) == 0
    key = lambda r: (r["id"], r["segment"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(read_jsonl(fresh), key=key)
    assert {key(r): r for r in rows}[("s2", 0)] == first[("s2", 0)]  # untouched sample kept
    # a changed --dtype changes every row's input_hash: all are scored again
    capsys.readouterr()
    assert main(_detect(tiny_llama_big_dir, tiny_llama_dir, data2, out, "--level", "both",
                        "--dtype", "bfloat16")) == 0
    assert "3 scored (3 redone" in capsys.readouterr().out


def _scores_for(sample: dict, **extra) -> dict:
    words = sample["instruction"].split(" ")
    units, pos = [], 0
    for w in words:
        units.append([pos, pos + len(w)])
        pos += len(w) + 1
    diff = [0.0 if w in ("rumor", ":", "7") else 1.0 for w in words]
    return {"id": sample["id"], "level": "instruction", "segment": 0, "field": "instruction",
            "prefix_end": None, "units": units, "diff": diff, "unit_kind": "word", **extra}


def test_prune_refuses_scores_of_another_text(tmp_path, capsys):
    v1 = _samples()
    scores = write(tmp_path / "scores.jsonl",
                   [_scores_for(s, text_hash=text_hash(s)) for s in v1])
    v2 = [v1[0], dict(v1[1], instruction="query a + b + c ; a = 1 ; rumor : 7"), v1[2]]
    data = write(tmp_path / "v2.jsonl", v2)
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--scores", str(scores), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{scores}:2: field 'text_hash'" in err and "'s1'" in err
    assert not out.exists() and _no_scratch(out)
    # the text it was computed from is accepted
    write(tmp_path / "v1.jsonl", v1)
    assert main(["prune", "--data", str(tmp_path / "v1.jsonl"), "--scores", str(scores),
                 "--out", str(out)]) == 0


def test_prune_redoes_samples_whose_settings_or_scores_changed(tmp_path, capsys):
    samples = _samples()
    data = write(tmp_path / "data.jsonl", samples)
    scores = write(tmp_path / "scores.jsonl", [_scores_for(s) for s in samples])
    out = tmp_path / "cf.jsonl"

    def prune(*extra, to=out):
        capsys.readouterr()
        rc = main(["prune", "--data", str(data), "--scores", str(scores), "--out", str(to),
                   *extra])
        return rc, capsys.readouterr().err

    assert prune("--tau", "0.1")[0] == 0
    rc, err = prune("--tau", "0.1")
    assert rc == 0 and "3 samples already done" in err and "redone" not in err
    # another --tau: every sample is pruned again, as a fresh run would
    rc, err = prune("--tau", "1.0")
    assert rc == 0 and "3 samples redone" in err
    assert prune("--tau", "1.0", to=tmp_path / "fresh.jsonl")[0] == 0
    assert out.read_bytes() == (tmp_path / "fresh.jsonl").read_bytes()
    # new scores for one sample: that sample alone is redone
    rows = read_jsonl(scores)
    rows[2]["diff"] = [1.0] * len(rows[2]["diff"])
    write(scores, rows)
    rc, err = prune("--tau", "1.0")
    assert rc == 0 and "1 samples redone" in err and "2 samples already done" in err


# ---------------------------------------------------------------------------------------------
# 2. damaged weights


@pytest.mark.parametrize("damage", ["truncated", "zero-filled"])
def test_damaged_safetensors_names_the_model_folder(tiny_llama_dir, tmp_path, capsys, damage):
    broken = tmp_path / "broken-teacher"
    shutil.copytree(tiny_llama_dir, broken)
    weights = broken / "model.safetensors"
    size = weights.stat().st_size
    if damage == "truncated":
        os.truncate(weights, size // 2)
    else:
        weights.write_bytes(b"\0" * size)
    data = write(tmp_path / "data.jsonl", _samples())
    out = tmp_path / "scores.jsonl"
    assert main(_detect(broken, tiny_llama_dir, data, out)) == 2
    err = capsys.readouterr().err
    assert f"cannot load the teacher from '{broken}'" in err
    assert "truncated or damaged" in err
    assert not out.exists() and _no_scratch(out)  # no empty .part left behind


# ---------------------------------------------------------------------------------------------
# 3. read-only folder, full disk


class _FakeOs:
    """``os`` for leaf.data.resumable (the ``.part`` writer), with one call failing as the file
    system would."""

    def __init__(self, name: str, err: int) -> None:
        self._name, self._err = name, err

    def __getattr__(self, attr):
        if attr == self._name:
            def fail(path_or_fd, *args, **kwargs):
                raise OSError(self._err, os.strerror(self._err),
                              path_or_fd if isinstance(path_or_fd, str | Path) else None)
            return fail
        return getattr(os, attr)


@pytest.mark.parametrize("call,err", [("open", errno.EROFS), ("write", errno.ENOSPC)])
def test_unwritable_output_is_one_line_and_keeps_the_good_output(tmp_path, capsys, monkeypatch,
                                                                 call, err):
    samples = _samples()
    data = write(tmp_path / "data.jsonl", samples)
    scores = write(tmp_path / "scores.jsonl", [_scores_for(s) for s in samples])
    out = tmp_path / "cf.jsonl"
    args = ["prune", "--data", str(data), "--scores", str(scores), "--out", str(out)]
    assert main(args) == 0
    good = out.read_bytes()
    # rerun with another --tau (so rows must be written) on a file system that refuses
    monkeypatch.setattr(resumable_module, "os", _FakeOs(call, err))
    capsys.readouterr()
    assert main([*args, "--tau", "0.9"]) == 2
    msg = capsys.readouterr().err
    assert msg.startswith("leaf prune: error: cannot write ") and os.strerror(err) in msg
    assert f"{out}.part" in msg
    monkeypatch.undo()
    assert out.read_bytes() == good and _no_scratch(out)


def test_output_under_a_file_is_one_line(tmp_path, capsys):
    bench = write(tmp_path / "bench.jsonl", [{"id": "m", "task": "math", "instruction": "1+1?",
                                              "answer": "2"}])
    preds = write(tmp_path / "preds.jsonl", [{"id": "m", "response": "2"}])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds), "--out",
                 str(blocker / "metrics.json")]) == 2
    err = capsys.readouterr().err
    assert "leaf grade: error: cannot write " in err and "blocker" in err
    assert "a file stands where a folder is needed" in err


def test_os_errors_from_anywhere_are_one_line(monkeypatch, capsys):
    import leaf.commands.grade as grade_cmd

    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", "/ro/metrics.json")

    monkeypatch.setattr(grade_cmd, "run", read_only)
    assert main(["grade", "--bench", "b", "--predictions", "p", "--out", "o"]) == 2
    assert capsys.readouterr().err == \
        "leaf grade: error: /ro/metrics.json: Read-only file system\n"

    def rust_full_disk(args):  # how safetensors reports a full disk
        raise RuntimeError("I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(grade_cmd, "run", rust_full_disk)
    assert main(["grade", "--bench", "b", "--predictions", "p", "--out", "o"]) == 2
    assert "No space left on device" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 4. code sample without entry_point; 9. unknown prediction id


def test_check_program_without_entry_point_is_refused(tmp_path, capsys):
    bench = write(tmp_path / "bench.jsonl", [
        {"id": "c1", "task": "code", "instruction": "Write add.", "response": "",
         "tests": "def check(f):\n    assert f(1, 2) == 3\n"}])
    preds = write(tmp_path / "preds.jsonl", [{"id": "c1", "response": "def add(a, b): ..."}])
    out = tmp_path / "metrics.json"
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds), "--out",
                 str(out)]) == 2
    assert f"{bench}:1: field 'entry_point': missing" in capsys.readouterr().err
    assert not out.exists()
    # list-of-cases tests need no entry_point
    read_samples(write(tmp_path / "ok.jsonl", [
        {"id": "c1", "task": "code", "instruction": "Echo.", "response": "",
         "tests": [{"input": "1\n", "output": "1\n"}]}]), need_grading=True)


def test_unknown_prediction_id_is_named(tmp_path, capsys):
    bench = write(tmp_path / "bench.jsonl", [{"id": "a", "task": "math", "instruction": "1+1?",
                                              "answer": "2"}])
    preds = write(tmp_path / "preds.jsonl", [{"id": "zzz", "response": "2"}])
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds), "--out",
                 str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "prediction id(s) not in the bench: 'zzz'" in err
    assert "no prediction for 1 bench id(s): 'a'" in err


# ---------------------------------------------------------------------------------------------
# 5. output == input; no .part after an argument error


def test_output_equal_to_an_input_is_refused_up_front(tiny_llama_dir, tmp_path, capsys):
    samples = _samples()
    data = write(tmp_path / "data.jsonl", samples)
    scores = write(tmp_path / "scores.jsonl", [_scores_for(s) for s in samples])
    before = data.read_bytes(), scores.read_bytes()
    for out in (data, scores, tmp_path / "." / "data.jsonl"):
        assert main(["prune", "--data", str(data), "--scores", str(scores), "--out",
                     str(out)]) == 2
        assert "is also an input" in capsys.readouterr().err
    assert main(_detect(tiny_llama_dir, tiny_llama_dir, data, data)) == 2
    assert "is also an input" in capsys.readouterr().err
    preds = write(tmp_path / "preds.jsonl", [{"id": s["id"], "response": "7"} for s in samples])
    assert main(["grade", "--bench", str(data), "--predictions", str(preds), "--out",
                 str(preds)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert (data.read_bytes(), scores.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "preds.jsonl",
                                                           "scores.jsonl"]


def test_a_refused_run_leaves_no_part_file(tmp_path, capsys):
    data = write(tmp_path / "data.jsonl", _samples())  # no planted spans
    out = tmp_path / "cf.jsonl"
    for _ in range(2):  # the second run fails the same clean way, not on a stale .part
        assert main(["prune", "--data", str(data), "--masking", "planted", "--out",
                     str(out)]) == 2
        assert "planted" in capsys.readouterr().err
        assert not out.exists() and _no_scratch(out)


# ---------------------------------------------------------------------------------------------
# 6. inputs longer than the context


def test_huge_instruction_is_refused_before_tokenising(tiny_llama_dir, tmp_path, capsys):
    rows = _samples()
    rows[1]["instruction"] = "seven " * (8 * 2**20)  # 48 MiB on one line
    data = tmp_path / "data.jsonl"
    write(data, rows)
    out = tmp_path / "scores.jsonl"
    t0 = time.monotonic()
    assert main(_detect(tiny_llama_dir, tiny_llama_dir, data, out)) == 2
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert "1 sample(s) longer than 512 tokens (the student's context length)" in err
    assert "id 's1'" in err and "characters" in err
    assert not out.exists() and _no_scratch(out)
    assert took < 30  # tokenising 48 MiB with offsets took minutes and gigabytes


def test_max_length_names_every_long_sample(tiny_llama_dir, tmp_path, capsys):
    data = write(tmp_path / "data.jsonl", _samples())
    out = tmp_path / "scores.jsonl"
    assert main(_detect(tiny_llama_dir, tiny_llama_dir, data, out, "--max-length", "12")) == 2
    err = capsys.readouterr().err
    assert "3 sample(s) longer than 12 tokens (max_length)" in err
    assert all(f"id 's{i}'" in err and "tokens" in err for i in range(3))
    assert not out.exists() and _no_scratch(out)


# ---------------------------------------------------------------------------------------------
# 8. byte-order mark


def test_bom_is_accepted_and_non_utf8_still_refused(tmp_path):
    rows = _samples()
    text = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + text)
    assert read_samples(bom) == rows
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(text + '{"id": "x", "task": "math", "instruction": "caf\xe9"}\n'
                      .encode("latin-1"))
    with pytest.raises(Exception, match=r"latin.jsonl:4: not UTF-8"):
        read_samples(latin)


# ---------------------------------------------------------------------------------------------
# 10. report_to without its package


@pytest.mark.parametrize("integration,extra", [("wandb", "wandb"),
                                               ("tensorboard", "tensorboard")])
def test_report_to_without_the_package_names_the_extra(tmp_path, monkeypatch, capsys,
                                                       integration, extra):
    import importlib.util

    from leaf.stages import distill_arguments

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "tensorboard", "tensorboardX")
                        else real(name, *a))
    config = {"student_model": "s", "teacher_model": "t", "train_file": "x.jsonl",
              "output_dir": str(tmp_path / "out")}
    with pytest.raises(SettingError, match=rf"config.report_to: {integration} is not installed; "
                                           rf"pip install 'leaf-distill\[{extra}\]'"):
        distill_arguments({**config, "report_to": integration})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["distill", "--config", str(path), "--report_to", integration]) == 2
    err = capsys.readouterr().err
    assert f"--report_to: {integration} is not installed" in err
    assert f"leaf-distill[{extra}]" in err
    assert distill_arguments({**config, "report_to": "none"}).report_to in ([], ["none"], "none")


# ---------------------------------------------------------------------------------------------
# 7. Ctrl-C


def _env(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
            "TMPDIR": str(tmp)}


def test_ctrl_c_during_grade_stops_kills_the_programs_and_exits_130(tmp_path):
    sleepy = "```python\nimport time\ntime.sleep(30)\ndef add(a, b):\n    return a + b\n```"
    bench = write(tmp_path / "bench.jsonl", [
        {"id": f"c{i}", "task": "code", "instruction": "Write add.", "response": "",
         "tests": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"}
        for i in range(6)])
    preds = write(tmp_path / "preds.jsonl", [{"id": f"c{i}", "response": sleepy}
                                             for i in range(6)])
    spool = tmp_path / "tmp"
    spool.mkdir()
    out = tmp_path / "metrics.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "leaf.cli", "grade", "--bench", str(bench), "--predictions",
         str(preds), "--out", str(out), "--workers", "2", "--code-timeout", "60"],
        env=_env(spool), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # both workers' programs are running once their sandbox folders exist
    while len(list(spool.glob("leaf-sandbox-*"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    stopped = time.monotonic() - t0
    err = err.decode()
    assert proc.returncode == 130, err
    assert stopped < 5, stopped
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert not list(spool.glob("leaf-sandbox-*"))  # every run torn down
    for pid in filter(str.isdigit, os.listdir("/proc")):  # no program left sleeping
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(spool).encode() not in cmd


def test_ctrl_c_during_detect_keeps_the_part_file_and_exits_130(tiny_llama_dir,
                                                                 tiny_llama_big_dir, tmp_path):
    data = write(tmp_path / "data.jsonl", _samples(150))
    out = tmp_path / "scores.jsonl"
    part = tmp_path / "scores.jsonl.part"
    cmd = [sys.executable, "-m", "leaf.cli",
           *_detect(tiny_llama_big_dir, tiny_llama_dir, data, out)]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (part.exists() and part.read_bytes().count(b"\n") >= 3):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert time.monotonic() - t0 < 5
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    kept = read_jsonl(part)
    assert 3 <= len(kept) < 150 and not out.exists()
    assert main(_detect(tiny_llama_big_dir, tiny_llama_dir, data, out)) == 0
    assert read_jsonl(out)[:len(kept)] == kept and len(read_jsonl(out)) == 150


# ---------------------------------------------------------------------------------------------
# the bad-input suite, run as a user runs it: one line on stderr, exit 2, no traceback


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    samples = _samples()
    data = write(tmp / "data.jsonl", samples)
    scores = write(tmp / "scores.jsonl", [_scores_for(s, text_hash="0" * 16) for s in samples])
    bench = write(tmp / "bench.jsonl", [
        {"id": "c1", "task": "code", "instruction": "Write add.", "response": "",
         "tests": "def check(f):\n    assert f(1, 2) == 3\n"}])
    preds = write(tmp / "preds.jsonl", [{"id": "zzz", "response": "x"}])
    latin = tmp / "latin.jsonl"
    latin.write_bytes(b'{"id": "x", "task": "math", "instruction": "caf\xe9"}\n')
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump({"student_model": "s", "teacher_model": "t",
                                   "train_file": "x.jsonl", "output_dir": str(tmp / "o"),
                                   "report_to": "wandb"}))
    blocker = tmp / "blocker"
    blocker.write_text("")
    return {
        "stale scores": ["prune", "--data", str(data), "--scores", str(scores), "--out",
                         str(tmp / "cf.jsonl")],
        "out is data": ["prune", "--data", str(data), "--masking", "planted", "--out",
                        str(data)],
        "no entry_point": ["grade", "--bench", str(bench), "--predictions", str(preds),
                           "--out", str(tmp / "m.json")],
        "unknown id": ["grade", "--bench", str(data), "--predictions", str(preds),
                       "--out", str(tmp / "m.json")],
        "not utf-8": ["prune", "--data", str(latin), "--masking", "planted", "--out",
                      str(tmp / "cf.jsonl")],
        "out under a file": ["grade", "--bench", str(data), "--predictions", str(preds),
                             "--out", str(blocker / "m.json")],
    }


def test_bad_input_suite_prints_no_traceback(tmp_path):
    cases = _bad_inputs(tmp_path)
    if importlib_find("wandb") is None:
        cases["report_to wandb"] = ["distill", "--config", str(tmp_path / "c.yaml")]
    for name, args in cases.items():
        res = subprocess.run([sys.executable, "-m", "leaf.cli", *args], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (name, res.stderr)
        assert "Traceback" not in res.stderr, (name, res.stderr)
        assert res.stderr.startswith(f"leaf {args[0]}: error: "), (name, res.stderr)
        assert not list(tmp_path.glob("*.part")), name


def importlib_find(name: str):
    import importlib.util

    return importlib.util.find_spec(name)


# ---------------------------------------------------------------------------------------------
# 11 (fast part). a checkpoint cut short by a kill while saving is not resumed from


def test_resume_skips_a_checkpoint_cut_short_while_saving(tmp_path):
    from leaf.distill.config import DistillArguments
    from leaf.distill.recipe import resume_point

    out = tmp_path / "out"
    for step, state in ((2, "{}"), (4, "{}"), (6, '{"log_history": [')):  # 6: cut mid-write
        ckpt = out / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(state)
    (out / "checkpoint-8").mkdir()  # killed before its trainer state was written
    args = DistillArguments(output_dir=str(out), student_model="s", teacher_model="t",
                            train_file="x.jsonl", use_cpu=True, report_to="none")
    assert resume_point(args) == str(out / "checkpoint-4")


def test_output_holding_another_stages_rows_is_refused_and_kept(tmp_path, capsys):
    samples = _samples()
    data = write(tmp_path / "data.jsonl", samples)
    scores = write(tmp_path / "scores.jsonl", [_scores_for(s) for s in samples])
    other = write(tmp_path / "other.jsonl", _samples(2))  # samples, not counterfactuals
    before = other.read_bytes()
    for _ in range(2):
        assert main(["prune", "--data", str(data), "--scores", str(scores), "--out",
                     str(other)]) == 2
        err = capsys.readouterr().err
        assert f"{other} holds rows this stage did not write (no 'origin_id' field)" in err
        assert other.read_bytes() == before and _no_scratch(other)


def test_a_test_program_that_calls_check_itself_needs_no_entry_point(tmp_path, capsys):
    tests = ("def check(candidate):\n    assert candidate([2, 7], 9) == [0, 1]\n\n"
             "check(Solution().twoSum)")
    bench = write(tmp_path / "bench.jsonl", [
        {"id": "two-sum", "task": "code", "instruction": "Two sum.", "response": "",
         "tests": tests, "prompt": "from typing import List\n"}])
    good = ("```python\nclass Solution:\n    def twoSum(self, nums, target):\n"
            "        return [0, 1]\n```")
    preds = write(tmp_path / "preds.jsonl", [{"id": "two-sum", "response": good}])
    out = tmp_path / "m.json"
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds), "--out",
                 str(out)]) == 0
    assert json.loads(out.read_text())["pass@1"] == 1.0
    write(preds, [{"id": "two-sum", "response": good.replace("[0, 1]", "[1, 0]")}])
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds), "--out",
                 str(out)]) == 0
    assert json.loads(out.read_text())["pass@1"] == 0.0


def test_a_run_killed_after_its_last_checkpoint_trains_no_extra_step(tiny_llama_dir,
                                                                     tiny_llama_big_dir,
                                                                     tmp_path):
    import torch
    from safetensors.torch import load_file

    from distill_rows import training_rows
    from leaf.distill.config import DistillArguments
    from leaf.distill.recipe import train

    rows = write(tmp_path / "train.jsonl", training_rows(2, unverified=False))

    def args(name):
        return DistillArguments(
            output_dir=str(tmp_path / name), teacher_model=str(tiny_llama_big_dir),
            student_model=str(tiny_llama_dir), train_file=str(rows), use_cpu=True,
            per_device_train_batch_size=2, learning_rate=1e-3, lr_scheduler_type="constant",
            warmup_steps=0, max_steps=2, save_steps=2, logging_steps=1, seed=0,
            report_to="none", disable_tqdm=True, max_length=128)

    train(args("clean"))
    killed = tmp_path / "killed"
    train(args("killed"))
    for name in ("model.safetensors", "trainer_state.json"):  # as if killed after checkpoint-2
        (killed / name).unlink()
    trainer = train(args("killed"))
    assert trainer.state.global_step == 2
    a, b = load_file(tmp_path / "clean" / "model.safetensors"), load_file(killed /
                                                                          "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [e["step"] for e in json.loads((killed / "trainer_state.json").read_text())
             ["log_history"]]
    assert max(steps) == 2
