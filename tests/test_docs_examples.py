"""Runs the Python code blocks of the documentation so that the guides cannot rot.

Every fenced block opened with exactly ```` ```python ```` in a page under
`docs/` is executed; the blocks of one page run in order in one namespace, as
a reader would paste them, inside a temporary working directory. Shell
commands and output belong in ```` ```bash ```` or ```` ```text ```` blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
API_TARGET = re.compile(r"^::: (keras_siamese[\w.]*)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

# The guides' code is backend-agnostic and slow to run (it trains models);
# it runs in the torch environment, the one that runs the slow tests.
pytestmark = pytest.mark.slow


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text(encoding="utf-8"))


PAGES = sorted(page for page in DOCS.rglob("*.md") if python_blocks(page))


def test_the_guides_have_code_to_run():
    names = {page.name for page in PAGES}
    assert {
        "index.md",
        "getting-started.md",
        "contrastive-pairs.md",
        "datasets.md",
        "triplets.md",
        "weight-sharing.md",
        "saving-loading.md",
        "embedding-plot.md",
        "retrieval.md",
        "trunk-head.md",
        "images.md",
        "keras-io.md",
        "self-supervised.md",
    } <= names


def test_api_reference_documents_every_public_name():
    import keras_siamese

    targets = set()
    for page in (DOCS / "api").glob("*.md"):
        targets |= set(API_TARGET.findall(page.read_text(encoding="utf-8")))
    documented = {target.rsplit(".", 1)[-1] for target in targets}
    missing = sorted(set(keras_siamese.__all__) - documented)
    assert not missing, f"public names without an API entry in docs/api: {missing}"


def test_fence_pattern_finds_only_python_blocks():
    text = "```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = 2\n```\n"
    page = DOCS / "__not_a_page__.md"
    assert FENCE.findall(text) == ["x = 1\n", "y = 2\n"]
    assert not page.exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_page_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(python_blocks(page), start=1):
        code = compile(block, f"{page.relative_to(DOCS)} block {number}", "exec")
        exec(code, namespace)
