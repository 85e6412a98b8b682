"""Data-parallel stage 1 under torchrun (CPU, gloo): the merged output is byte for byte what one
process writes, a rank killed mid-stage resumes to the same bytes, and `leaf run` can launch
the stages itself. Also: the merge itself, and data from parquet / CSV / save_to_disk.

One torchrun launch (`leaf detect`) is in the fast suite; screen, prune --verify, the kill and
`leaf run` are slow (each launch starts two Python processes and loads the models again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leaf.cli import main as leaf_main
from leaf.testbed.assets import resolve_model

SRC = Path(__file__).resolve().parents[1] / "src"
TEACHER = resolve_model("testbed:digit_sum/teacher")
STUDENT = resolve_model("testbed:digit_sum/student")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            **extra}


def _torchrun(args: list[str], nproc: int = 2, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **popen)


def _check(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out + err).decode()[-4000:]
    return out.decode()


@pytest.fixture(scope="module")
def testbed_data(tmp_path_factory) -> Path:
    from leaf.testbed.tasks import write_splits

    root = tmp_path_factory.mktemp("dp-data")
    write_splits(root, "digit_sum", seed=3, sizes={"train": 12, "test_id": 0, "test_anti": 0,
                                                  "test_clean": 0})
    return root / "train.jsonl"


# ---------------------------------------------------------------------------------------------
# the merge, without a launcher


def test_merge_keeps_earlier_rows_then_input_order_and_drops_duplicates(tmp_path):
    from leaf.data.rowjob import _merge_files, rank_path, units

    out = tmp_path / "scores.jsonl"
    items = [{"id": k} for k in "abcdef"]
    assert [[x["id"] for x in u] for _, u in units(items, 2)] == [["a", "b"], ["c", "d"],
                                                                   ["e", "f"]]

    def rows(*keys):
        return "".join(json.dumps({"id": k, "n": i}) + "\n" for k in keys for i in range(2))

    base = [{"id": "z", "n": 0}]
    rank_path(out, 0).write_text(rows("a", "b", "e", "f"))
    # rank 1 was killed mid-write (a cut line) and an old rank 2 repeated a finished item
    Path(str(rank_path(out, 1)) + ".part").write_text(rows("c", "d") + '{"id": "x", "n"')
    rank_path(out, 2).write_text(rows("a"))
    _merge_files(out, items, lambda s: s["id"], lambda r: r["id"], base)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == base + [json.loads(line) for line in rows(*"abcdef").splitlines()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


# ---------------------------------------------------------------------------------------------
# any dataset as input


COLUMNS = "id=uid,instruction=question,response=solution,answer=final,task=kind"


def _renamed(rows: list[dict]) -> list[dict]:
    return [{"uid": r["id"], "question": r["instruction"], "solution": r["response"],
             "final": r["answer"], "kind": r["task"]} for r in rows]


def test_detect_reads_parquet_csv_and_save_to_disk_with_columns(testbed_data, tmp_path, capsys):
    import datasets

    rows = [json.loads(line) for line in testbed_data.read_text().splitlines()][:4]
    jsonl = tmp_path / "samples.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = datasets.Dataset.from_list(_renamed(rows))
    ds.to_parquet(str(tmp_path / "s.parquet"))
    ds.to_csv(str(tmp_path / "s.csv"), index=False)
    ds.save_to_disk(str(tmp_path / "s_dir"))

    common = ["detect", "--teacher", TEACHER, "--student", STUDENT, "--device", "cpu"]
    assert leaf_main([*common, "--data", str(jsonl), "--out", str(tmp_path / "ref.jsonl")]) == 0
    ref = (tmp_path / "ref.jsonl").read_bytes()
    assert ref.count(b"\n") == 4
    for name in ("s.parquet", "s.csv", "s_dir"):
        out = tmp_path / f"{name}.scores.jsonl"
        assert leaf_main([*common, "--data", str(tmp_path / name), "--columns", COLUMNS,
                          "--out", str(out)]) == 0
        assert out.read_bytes() == ref, name

    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    assert leaf_main([*common, "--data", str(tmp_path / "s.parquet"), "--columns",
                      "instruction=prompt", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "column 'prompt' (for instruction) not found" in err
    assert "uid, question, solution, final, kind" in err and "Traceback" not in err
    assert not bad.exists()
    # without a mapping, the first missing field names the columns there are
    assert leaf_main([*common, "--data", str(tmp_path / "s.csv"), "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "s.csv:2: field 'task': missing" in err and "uid, question" in err


def test_columns_constant_and_numbered_ids(tmp_path):
    import datasets

    from leaf.data.readers import Table
    from leaf.data.schema import read_samples

    datasets.Dataset.from_list([{"q": "1 + 1 ?", "a": "2"}, {"q": "2 + 2 ?", "a": "4"}]) \
        .to_json(str(tmp_path / "plain.json"))
    rows = read_samples(Table(str(tmp_path / "plain.json"),
                              {"instruction": "q", "answer": "a", "task": "'math'"}),
                        need_response=False, need_grading=True)
    assert rows == [{"id": "1", "instruction": "1 + 1 ?", "answer": "2", "task": "math"},
                    {"id": "2", "instruction": "2 + 2 ?", "answer": "4", "task": "math"}]


# ---------------------------------------------------------------------------------------------
# torchrun: the same bytes as one process


def _cli(stage: str, *args: str) -> list[str]:
    return ["-m", "leaf.cli", stage, *args]


_SCRIPT = """
import sys
from leaf import stages as S
teacher, student, data, out = sys.argv[1:5]
gen = S.GenerationOptions(batch_size=4, max_new_tokens=24, device="cpu")
S.screen(teacher, student, data, out + "/screened.jsonl", gen)
S.detect(teacher, student, data, out + "/scores.jsonl",
         S.DetectOptions(level="both", device="cpu", batch_size=1))
S.prune(data, out + "/scores.jsonl", out + "/cf.jsonl", None,
        S.VerifyOptions(teacher=teacher, student=student, generation=gen, chunk=4))
"""


def _stage1_in_process(data: Path, out: Path) -> None:
    from leaf import stages as S

    gen = S.GenerationOptions(batch_size=4, max_new_tokens=24, device="cpu")
    S.screen(TEACHER, STUDENT, data, out / "screened.jsonl", gen)
    S.detect(TEACHER, STUDENT, data, out / "scores.jsonl",
             S.DetectOptions(level="both", device="cpu", batch_size=1))
    S.prune(data, out / "scores.jsonl", out / "cf.jsonl", None,
            S.VerifyOptions(teacher=TEACHER, student=STUDENT, generation=gen, chunk=4))


def test_torchrun_detect_writes_the_bytes_of_one_process(testbed_data, tmp_path):
    args = ["--teacher", TEACHER, "--student", STUDENT, "--data", str(testbed_data),
            "--device", "cpu"]
    proc = _torchrun(_cli("detect", *args, "--out", str(tmp_path / "two.jsonl")))
    assert leaf_main(["detect", *args, "--out", str(tmp_path / "one.jsonl")]) == 0
    out = _check(proc)
    one = (tmp_path / "one.jsonl").read_bytes()
    assert one.count(b"\n") == 12 and one == (tmp_path / "two.jsonl").read_bytes()
    assert out.count("leaf detect: 12 scored") == 1  # rank 0 alone prints, counting all ranks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_bytes_of_one_process(testbed_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    script = tmp_path / "stage1.py"
    script.write_text(_SCRIPT)
    proc = _torchrun([str(script), TEACHER, STUDENT, str(testbed_data), str(two)])
    _stage1_in_process(testbed_data, one)
    _check(proc)
    for name in ("screened.jsonl", "scores.jsonl", "cf.jsonl", "cf.signal.json"):
        a, b = (one / name).read_bytes(), (two / name).read_bytes()
        assert a and a == b, name
    cf = [json.loads(line) for line in (one / "cf.jsonl").read_text().splitlines()]
    verified = [r["verified"] for r in cf if r["kind"] == "counterfactual"]
    assert True in verified and False in verified  # both answers occur: the check means something
    assert sorted(p.name for p in two.iterdir()) == ["cf.jsonl", "cf.signal.json", "scores.jsonl",
                                                     "screened.jsonl"]


# ---------------------------------------------------------------------------------------------
# slow: the commands themselves, a killed rank, leaf run


@pytest.mark.slow
def test_torchrun_cli_detect_screen_prune_match_one_process(testbed_data, tmp_path):
    gen = ["--batch-size", "4", "--max-new-tokens", "24", "--device", "cpu"]
    runs = {
        "screen": ["--teacher", TEACHER, "--student", STUDENT, "--data", str(testbed_data), *gen],
        "detect": ["--teacher", TEACHER, "--student", STUDENT, "--data", str(testbed_data),
                   "--level", "both", "--device", "cpu"],
    }
    for stage, args in runs.items():
        one, two = tmp_path / f"{stage}1.jsonl", tmp_path / f"{stage}2.jsonl"
        subprocess.run([sys.executable, *_cli(stage, *args, "--out", str(one))], env=_env(),
                       check=True, capture_output=True)
        out = _check(_torchrun(_cli(stage, *args, "--out", str(two))))
        assert one.read_bytes() == two.read_bytes(), stage
        assert out.count("wrote") + out.count("scored") == 1  # one summary, from rank 0
    prune = ["--data", str(testbed_data), "--scores", str(tmp_path / "detect1.jsonl"),
             "--verify", "--teacher", TEACHER, "--student", STUDENT, "--verify-chunk", "3", *gen]
    one, two = tmp_path / "cf1.jsonl", tmp_path / "cf2.jsonl"
    subprocess.run([sys.executable, *_cli("prune", *prune, "--out", str(one))], env=_env(),
                   check=True, capture_output=True)
    _check(_torchrun(_cli("prune", *prune, "--out", str(two))))
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.slow
def test_torchrun_teacher_cache_matches_one_process(tmp_path):
    from leaf.testbed.tasks import write_splits

    write_splits(tmp_path / "d", "digit_sum", seed=5, sizes={"train": 300, "test_id": 0,
                                                            "test_anti": 0, "test_clean": 0})
    cf = tmp_path / "cf.jsonl"  # 600 rows: 3 cache shards of 256, split over the 2 ranks
    assert leaf_main(["prune", "--data", str(tmp_path / "d" / "train.jsonl"), "--masking",
                      "planted", "--out", str(cf)]) == 0
    args = ["--teacher", TEACHER, "--data", str(cf), "--device", "cpu"]
    subprocess.run([sys.executable, *_cli("teacher-cache", *args, "--out",
                                          str(tmp_path / "one"))],
                   env=_env(), check=True, capture_output=True)
    _check(_torchrun(_cli("teacher-cache", *args, "--out", str(tmp_path / "two"))))
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["index.jsonl", "meta.json", "shard-00000.safetensors",
                     "shard-00001.safetensors", "shard-00002.safetensors"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank (a child of ``parent``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_rank_killed_mid_detect_resumes_to_the_same_bytes(tmp_path):
    from leaf.testbed.tasks import write_splits

    write_splits(tmp_path / "d", "digit_sum", seed=4, sizes={"train": 60, "test_id": 0,
                                                            "test_anti": 0, "test_clean": 0})
    args = ["--teacher", TEACHER, "--student", STUDENT, "--data", str(tmp_path / "d" /
            "train.jsonl"), "--level", "both", "--device", "cpu"]
    ref = tmp_path / "ref.jsonl"
    subprocess.run([sys.executable, *_cli("detect", *args, "--out", str(ref))], env=_env(),
                   check=True, capture_output=True)
    out = tmp_path / "scores.jsonl"
    part = tmp_path / "scores.jsonl.rank1.part"
    proc = _torchrun(_cli("detect", *args, "--out", str(out)))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if part.exists() and part.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.02)
    pid = _rank_pid(proc.pid, 1)
    assert pid is not None and proc.poll() is None, "rank 1 finished before it could be killed"
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert not out.exists() and part.exists()
    kept = part.read_bytes().count(b"\n")
    assert 4 <= kept < 60  # some of rank 1's share was done, not all of it
    _check(_torchrun(_cli("detect", *args, "--out", str(out))))
    assert out.read_bytes() == ref.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if "scores" in p.name) == ["scores.jsonl"]


@pytest.mark.slow
def test_leaf_run_launches_stage1_on_two_ranks(testbed_data, tmp_path):
    import yaml

    from leaf.testbed.tasks import write_splits

    write_splits(tmp_path / "d", "digit_sum", seed=3, sizes={"train": 10, "test_id": 6,
                                                            "test_anti": 0, "test_clean": 0})
    cfg = {"name": "dp", "data": {"train": "d/train.jsonl", "tests": {"test_id":
                                                                      "d/test_id.jsonl"}},
           "teacher": TEACHER, "student": STUDENT, "seeds": [0],
           "screen": {"batch_size": 4, "max_new_tokens": 24},
           "evaluate": {"batch_size": 4, "max_new_tokens": 24},
           "detect": {"all": True, "batch_size": 1, "levels": ["instruction"]},
           "counterfactuals": {"instruction_span": {"level": "instruction", "verify": True}},
           "distill": {"variants": {}}}
    results = {}
    for n in (1, 2):
        path = tmp_path / f"run{n}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "parallel": {"processes": n}}))
        run = tmp_path / f"run{n}"
        subprocess.run([sys.executable, "-m", "leaf.cli", "run", str(path), "--run-dir",
                        str(run), "--no-tables"], env=_env(), check=True, capture_output=True)
        results[n] = run
    for rel in ("data/screen/screened.jsonl", "data/detect/instruction.jsonl",
                "data/prune/instruction_span.jsonl", "eval/teacher/data/test_id/predictions.jsonl"):
        assert (results[1] / rel).read_bytes() == (results[2] / rel).read_bytes(), rel


# ---------------------------------------------------------------------------------------------
# leaf run: the parallel section and table inputs (fake stages, no launcher)


def test_leaf_run_sends_stage1_and_eval_to_the_launcher_and_reads_tables(monkeypatch, tmp_path):
    import datasets
    import yaml

    import leaf.pipeline.launch as launch_mod
    import leaf.pipeline.plan as plan
    import leaf.stages as leaf_stages
    from leaf.data.jsonl import read_jsonl, write_json_atomic
    from leaf.pipeline import run_pipeline
    from leaf.pipeline.config import load_config
    from test_pipeline_plan import FakeStages, _sample

    fake = FakeStages()
    for name in ("screen", "detect", "prune", "distill", "evaluate"):
        monkeypatch.setattr(leaf_stages, name, getattr(fake, name))
    monkeypatch.setattr(plan, "detection_metrics", lambda cf, sc, out: write_json_atomic(
        out, {"span_recall": 1.0, "token_precision": 0.5, "n_samples": 3}))
    launched = []

    def fake_launch(fn_name, args, kwargs, processes, launcher_args, threads=None):
        # what the ranks would receive: the call through JSON, options rebuilt and checked
        spec = json.loads(json.dumps({"args": [launch_mod._encode(a) for a in args],
                                      "kwargs": {k: launch_mod._encode(v)
                                                 for k, v in kwargs.items()}}))
        launched.append((fn_name, processes, launcher_args))
        getattr(leaf_stages, fn_name)(*[launch_mod._decode(a) for a in spec["args"]],
                                      **{k: launch_mod._decode(v)
                                         for k, v in spec["kwargs"].items()})

    monkeypatch.setattr(launch_mod, "launch", fake_launch)
    renamed = [{"q": r["instruction"], "sol": r["response"], "ans": r["answer"], "uid": r["id"],
                "planted": r["planted"]} for r in (_sample(i, "train") for i in range(6))]
    datasets.Dataset.from_list(renamed).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "planted"}
                                for r in renamed[:4]]).to_csv(str(tmp_path / "test.csv"),
                                                              index=False)
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir()
        (tmp_path / role / "config.json").write_text("{}")
    cfg = {"name": "fake", "teacher": "teacher", "student": "student", "seeds": [0],
           "data": {"train": "train.parquet", "tests": {"test_id": "test.csv"},
                    "columns": {"id": "uid", "instruction": "q", "response": "sol",
                                "answer": "ans", "task": "'math'"}},
           "counterfactuals": {"instruction_span": {"level": "instruction", "verify": True},
                               "instruction_random": {"level": "instruction",
                                                      "masking": "random"}},
           "detect": {"levels": ["instruction"]},
           "distill": {"args": {"max_steps": 3}, "variants": {"kd": []}},
           "parallel": {"processes": 3}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_pipeline(load_config(path), tmp_path / "run", log=lambda s: None)

    names = [n for n, _, _ in launched]
    assert names.count("screen") == 1 and names.count("detect") == 1
    assert names.count("prune") == 1  # the verified set only; random masking runs in process
    assert names.count("evaluate") == 3  # teacher, student, kd-s0 on test_id
    assert {(p, tuple(a)) for _, p, a in launched} == {(3, ("--standalone",))}
    assert [c for c, _ in fake.calls].count("prune") == 2
    train = read_jsonl(tmp_path / "run" / "data" / "data" / "train.jsonl")
    assert train[0] == {"id": "train-0", "instruction": "a = 0 ; rumor : 9 ; query a ?",
                        "response": "0. The answer is 0.", "answer": "0",
                        "planted": _sample(0, "train")["planted"], "task": "math"}
    assert len(read_jsonl(tmp_path / "run" / "data" / "data" / "test_id.jsonl")) == 4


def test_parallel_and_columns_settings_are_checked(tmp_path):
    import yaml

    from leaf.errors import LeafError
    from leaf.pipeline.config import load_config

    base = {"data": {"testbed": "digit_sum"}}
    for patch, message in (({"parallel": {"processes": 0}}, r"parallel.processes: must be >= 1"),
                           ({"parallel": {"stages": ["distill"]}}, r"parallel.stages\[0\]"),
                           ({"data": {"testbed": "digit_sum", "columns": {"id": 3}}},
                            r"data.columns: expected dict")):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**base, **patch}))
        with pytest.raises(LeafError, match=message):
            load_config(path)


def test_jsonl_with_columns_keeps_line_numbers(tmp_path):
    from leaf.data.readers import Table
    from leaf.data.schema import read_samples
    from leaf.errors import LeafInputError

    path = tmp_path / "s.jsonl"
    path.write_text('{"uid": "a", "q": "x ?", "kind": "qa", "gold": "y"}\n\n'
                    '{"uid": "b", "q": "", "kind": "qa", "gold": "y"}\n')
    mapping = {"id": "uid", "instruction": "q", "task": "kind", "answer": "gold"}
    with pytest.raises(LeafInputError, match=r"s.jsonl:3: field 'instruction'"):
        read_samples(Table(str(path), mapping), need_response=False)


@pytest.mark.parametrize("visible, local_rank, local_world, want", [
    ("0,1,2,3,4,5,6,7", 1, 2, "4,5,6,7"),   # 2 ranks x 4 GPUs
    ("0,1,2,3,4,5,6,7", 3, 8, "3"),         # one GPU a rank
    ("2,5", 2, 3, "2"),                     # fewer GPUs than ranks: shared round-robin
])
def test_each_rank_gets_its_slice_of_the_gpus(monkeypatch, visible, local_rank, local_world,
                                              want):
    from leaf import distributed

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    distributed._split_gpus(distributed.Ranks(local_rank, local_world, local_rank, local_world))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == want
