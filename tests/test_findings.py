"""The findings `leaf demo` prints first are the ones README.md's first screen carries."""

from __future__ import annotations

from pathlib import Path

from leaf.testbed.findings import FINDINGS, TITLE, findings_text

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_first_screen_carries_the_findings_verbatim():
    text = README.read_text(encoding="utf-8")
    block = findings_text().replace("## ", "### ", 1)
    assert block in text
    # the first screen: before the set-up section
    assert text.index(block) < text.index("## Set-up: two commands") < 4000


def test_findings_name_their_source_and_are_short():
    assert "docs/RESULTS.md" in TITLE
    lines = FINDINGS.splitlines()
    assert 4 <= len(lines) <= 20 and all(len(line) <= 96 for line in lines)
