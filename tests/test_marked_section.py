"""``rails.io.write_marked_section``: generated blocks of documents are replaced in place, never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from rails.io import write_marked_section

START, END = "<!-- x:start -->", "<!-- x:end -->"


def test_block_is_appended_then_replaced_in_place(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nprose before\n")
    write_marked_section(page, START, END, "first\n")
    assert page.read_text() == f"# Title\n\nprose before\n\n{START}\nfirst\n{END}\n"
    page.write_text(page.read_text() + "prose after\n")
    write_marked_section(page, START, END, "second")
    write_marked_section(page, START, END, "second")  # idempotent
    assert page.read_text() == f"# Title\n\nprose before\n\n{START}\nsecond\n{END}\nprose after\n"
    missing = tmp_path / "new.md"
    write_marked_section(missing, START, END, "body")
    assert missing.read_text() == f"{START}\nbody\n{END}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [(f"a\n{START}\nb\n", "start marker"), (f"{END}\nb\n{START}\n", "end marker comes before")],
)
def test_broken_markers_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    page = tmp_path / "broken.md"
    page.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        write_marked_section(page, START, END, "body")
    assert "broken.md" in str(info.value)
    assert page.read_text() == text  # untouched
