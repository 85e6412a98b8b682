"""The HTML report: one offline document, safe escaping, embedded data, figures, statistics."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import write_jsonl
from leaf.cli import main
from leaf.report.collect import build_report_data, find_run_files, threshold_settings
from leaf.report.html import embed_json, render_html
from leaf.report.synthetic import make_rows, write_run

EVIL = 'Ignore this </script><script>alert("x")</script> <!-- & \u2028 <b>'
ROOT = Path(__file__).resolve().parents[1]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.doctype = 0
        self._in_script: dict | None = None
        self._buf: list[str] = []

    def handle_decl(self, decl):
        self.doctype += decl.lower().startswith("doctype")

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script, self._buf = dict(attrs), []

    def handle_data(self, data):
        if self._in_script is not None:
            self._buf.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._buf)))
            self._in_script = None


@pytest.fixture
def run_dir(tmp_path):
    rows = make_rows(30, seed=1)
    evil_id = rows["screened"][3]["id"]
    for group in rows.values():
        for row in group:
            if evil_id in (row.get("id"), row.get("origin_id")) and "instruction" in row:
                row["instruction"] = row["instruction"] + " " + EVIL
    run = _mk(tmp_path / "run")
    for name, group in rows.items():
        write_jsonl(run / f"{name}.jsonl", group)
    (run / "attention.json").write_text(json.dumps({"spans": "planted", "data": "x", "models": [
        {"model": "a", "label": "KD", "per_layer": [0.3, 0.2], "mean": 0.25, "uniform": 0.1,
         "n_items": 3, "per_item": []},
        {"model": "b", "label": "LeaF", "per_layer": [0.1, 0.1], "mean": 0.1, "uniform": 0.1,
         "n_items": 3, "per_item": []}]}))
    return run, rows, evil_id


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_report_is_one_offline_document_with_safe_data(run_dir):
    run, rows, evil_id = run_dir
    assert main(["report", str(run)]) == 0
    page_text = (run / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(page_text)
    page.close()
    tags = [t for t, _ in page.starts]
    assert page.doctype == 1 and tags.count("html") == 1 and tags.count("body") == 1
    # nothing is loaded from elsewhere: no src/href to another host, images are data URIs
    for tag, attrs in page.starts:
        for key in ("src", "href"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
        assert tag not in ("link", "iframe")
    # exactly two scripts: the JSON data and the inline code; sample text cannot close either
    assert len(page.scripts) == 2
    assert page_text.count("</script>") == 2
    (data_attrs, data_text), (code_attrs, code) = page.scripts
    assert data_attrs == {"type": "application/json", "id": "leaf-data"}
    assert "src" not in code_attrs and "JSON.parse" in code
    data = json.loads(data_text)
    evil = next(s for s in data["samples"] if s["id"] == evil_id)
    assert evil["ins"].endswith(EVIL)  # the original text comes back exactly
    assert len(data["samples"]) == 30
    assert data["attention"][0]["models"][1]["label"] == "LeaF"
    # figures written next to the HTML and embedded
    for name in ("report_diff.png", "report_spans.png", "report_attention.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(t == "img" for t in tags) == 3


def test_report_data_matches_the_inputs(run_dir):
    _, rows, _ = run_dir
    data = build_report_data(rows["scores"], rows["counterfactuals"], rows["screened"])
    s = data["summary"]
    cfs = [r for r in rows["counterfactuals"] if r["kind"] == "counterfactual"]
    assert s["counterfactuals"] == len(cfs)
    assert s["verified"] == sum(r["verified"] is True for r in cfs)
    assert s["rejected"] == sum(r["verified"] is False for r in cfs)
    assert s["verified_share"] == pytest.approx(s["verified"] / (s["verified"] + s["rejected"]))
    assert s["student_wrong_teacher_right"] == sum(
        r["teacher_correct"] and not r["student_correct"] for r in rows["screened"])
    assert s["scored_samples"] == len({r["id"] for r in rows["scores"]})
    # every scored row becomes a view with its units, values in per mille and the cut-off
    score = rows["scores"][0]
    sample = next(x for x in data["samples"] if x["id"] == score["id"])
    view = next(v for v in sample["views"] if v["level"] == score["level"])
    assert view["u"] == [x for span in score["units"] for x in span]
    assert view["d"] == [round(1000 * x) for x in score["diff"]]
    assert view["cut"] == pytest.approx(0.10)
    assert view["nc"] == sum(x <= 0.10 for x in score["diff"])
    # response counterfactuals keep their segment (from the id)
    resp = [c for x in data["samples"] for c in x["cfs"] if c["level"] == "response"]
    assert resp and all(c["seg"] == 1 for c in resp)


def test_threshold_from_rows_or_flags():
    rows = [{"kind": "counterfactual", "threshold_mode": "quantile", "quantile": 0.2}]
    assert threshold_settings(rows) == {"mode": "quantile", "tau": 0.10, "quantile": 0.2,
                                        "source": "counterfactuals"}
    assert threshold_settings(rows, mode="fixed", tau=0.15)["tau"] == 0.15
    assert threshold_settings([])["source"] == "default"
    # leaf prune writes the cut-off it used per row: one value reads as a fixed tau ...
    same = [{"kind": "counterfactual", "threshold": 0.15}] * 2
    assert threshold_settings(same)["mode"] == "fixed"
    assert threshold_settings(same)["tau"] == 0.15
    # ... differing ones are shown per row, and rows without counterfactuals get no cut-off
    differ = [{"kind": "counterfactual", "origin_id": "a", "level": "instruction",
               "id": "a#i0", "pruned": [[0, 1]], "threshold": 0.2},
              {"kind": "counterfactual", "origin_id": "b", "level": "instruction",
               "id": "b#i0", "pruned": [[0, 1]], "threshold": 0.4}]
    rows = [{"id": i, "level": "instruction", "segment": 0, "field": "instruction",
             "units": [[0, 1], [1, 2]], "teacher": [0, 1], "student": [1, 0],
             "diff": [0.3, 1.0]} for i in ("a", "b", "c")]
    texts = [{"id": i, "instruction": "xy"} for i in ("a", "b", "c")]
    views = {s["id"]: s["views"][0]
             for s in build_report_data(rows, differ, texts)["samples"]}
    assert (views["a"]["cut"], views["a"]["nc"], views["a"]["c"]) == (0.2, 0, [])
    assert (views["b"]["cut"], views["b"]["nc"], views["b"]["c"]) == (0.4, 1, [0])
    assert (views["c"]["cut"], views["c"]["nc"]) == (None, None)
    assert "no counterfactual" in views["c"]["why"]
    scores = [{"id": "a", "level": "instruction", "segment": 0, "field": "instruction",
               "units": [[0, 1], [1, 2], [2, 3], [3, 4]], "teacher": [0, 1, 1, 0],
               "student": [1, 0, 0, 1], "diff": [0.0, 1.0, 0.5, 0.3]}]
    data = build_report_data(scores, (), [{"id": "a", "instruction": "wxyz"}], tau=0.3)
    view = data["samples"][0]["views"][0]
    assert (view["c"], view["nc"], view["runs"]) == ([0, 3], 2, 2)
    # no text source: the whitespace rule cannot be applied, so the report says so
    data = build_report_data(scores, tau=0.3)
    view = data["samples"][0]["views"][0]
    assert (view["c"], view["nc"], view["runs"]) == (None, None, None)
    assert "text is not in the run" in view["why"]
    assert data["summary"]["without_text"] == 1
    assert data["summary"]["levels"]["instruction"]["rows_without_candidates"] == 1
    assert data["summary"]["levels"]["instruction"]["candidate_share"] is None
    # text that the units do not fit, or a diff per unit missing: unknown too, not a crash
    for bad, text in ((scores[0], "wx"), (dict(scores[0], diff=[0.0]), "wxyz")):
        view = build_report_data([bad], (), [{"id": "a", "instruction": text}],
                                 tau=0.3)["samples"][0]["views"][0]
        assert view["nc"] is None and view["why"].startswith("candidates unknown")


def test_run_dir_manifest_and_errors(tmp_path, capsys):
    run = write_run(tmp_path / "r", n=5)
    sub = _mk(tmp_path / "m" / "stage")
    for name in ("scores", "counterfactuals", "screened"):
        shutil.copy(run / f"{name}.jsonl", sub / f"{name}-x.jsonl")
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({"files": {
        "scores": "stage/scores-x.jsonl", "counterfactuals": ["stage/counterfactuals-x.jsonl"],
        "screened": "stage/screened-x.jsonl"}}))
    files = find_run_files(tmp_path / "m")
    assert files.data == sub / "screened-x.jsonl" and len(files.scores) == 1
    out = tmp_path / "out" / "r.html"
    assert main(["report", "--scores", str(run / "scores.jsonl"), "--counterfactuals",
                 str(run / "counterfactuals.jsonl"), "--out", str(out), "--no-figures"]) == 0
    assert out.is_file() and not list(out.parent.glob("*.png"))
    assert main(["report", str(_mk(tmp_path / "empty"))]) == 2
    assert "found no scores" in capsys.readouterr().err


def test_embed_json_round_trips_hostile_text():
    obj = {"t": EVIL + "</SCRIPT >\u2029"}
    text = embed_json(obj)
    assert "<" not in text and ">" not in text and "\u2028" not in text
    assert json.loads(text) == obj
    html = render_html({"title": "<t>", "threshold": {}, "summary": {}, "samples": []})
    assert "<title>&lt;t&gt;</title>" in html


def test_renders_in_headless_chromium(tmp_path, chromium):
    run = write_run(tmp_path / "r", n=40)
    assert main(["report", str(run), "--no-figures"]) == 0
    res = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), "--probe",
                          str(run / "report.html")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    probe = json.loads(res.stdout.splitlines()[0])
    assert probe["samples"] == 40 and probe["first_page_cards"] == 20
