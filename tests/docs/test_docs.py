"""The documentation's Python examples run, so they cannot rot. Each page's ```python blocks run
in order in one namespace, in a fresh folder; a block after a ``<!-- not run: why -->`` line is
skipped (it needs something the page cannot make, and the comment says where it runs)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"(<!-- not run[^>]*-->\n)?```python\n(.*?)```", re.DOTALL)


def examples(page: Path) -> list[str]:
    return [code for skipped, code in BLOCK.findall(page.read_text()) if not skipped]


PAGES = sorted(page for page in DOCS.glob("*.md") if examples(page))


def test_the_pages_have_examples():
    assert {page.name for page in PAGES} >= {"getting-started.md", "migrating.md", "writing-components.md"}


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_the_examples_of_a_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")  # a real module: dataclasses need one
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, code in enumerate(examples(page), start=1):
        exec(compile(code, f"{page.name}, example {number}", "exec"), module.__dict__)
