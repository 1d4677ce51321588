"""Issue 26 item 2: README's and the guides' figure tables are rendered from benchmarks/results/, never typed."""
from __future__ import annotations

from pathlib import Path

import pytest

from dfserve.bench import figures

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("page", figures.pages(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_tables_equal_what_the_results_render(page):
    assert page.read_text() == figures.render_page(page, ROOT), \
        f"{page.relative_to(ROOT)}: a figure table differs from benchmarks/results/: run `make figures`"


def test_readme_has_the_summary_table_with_cpu_and_h200_rows():
    text = (ROOT / "README.md").read_text()
    assert figures.blocks(text) == ["summary"]
    body = text.split("<!-- figures:summary -->")[1].split("<!-- /figures:summary -->")[0]
    assert "no GPU" in body and "NVIDIA H200" in body and "stage-triton.json" in body
    for row in [r for r in body.splitlines() if r.startswith("| ") and not r.startswith("| machine")]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] and cells[4][:4].isdigit() and ".json" in cells[5], row  # machine, date, source


def test_every_renderer_is_used_and_every_block_known():
    used = [name for page in figures.pages(ROOT) for name in figures.blocks(page.read_text())]
    assert sorted(used) == sorted(figures.RENDERERS)


def test_check_flags_a_stale_table(tmp_path):
    (tmp_path / "docs").mkdir()
    res = tmp_path / "benchmarks"
    res.symlink_to(ROOT / "benchmarks", target_is_directory=True)
    page = tmp_path / "docs" / "x.md"
    page.write_text("a\n<!-- figures:ray-scaling -->\n| typed | 1 |\n<!-- /figures:ray-scaling -->\nb\n")
    (tmp_path / "README.md").write_text("no tables\n")
    assert figures.main(["--root", str(tmp_path), "--check"]) == 1
    assert figures.main(["--root", str(tmp_path)]) == 0
    assert "../benchmarks/results/amd-epyc-2c-nogpu/ray_scaling.json" in page.read_text()
    assert figures.main(["--root", str(tmp_path), "--check"]) == 0
