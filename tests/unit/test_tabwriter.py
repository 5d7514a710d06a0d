"""Column alignment against Go's text/tabwriter as docker configures it."""

from __future__ import annotations

from swarmsecrets.cli.tabwriter import tabwrite


def test_tabwrite_minwidth_padding_and_last_cell() -> None:
    assert tabwrite("a\tb\tc\nlonger-than-ten\tx\ty\n") == (
        "a                 b         c\n"
        "longer-than-ten   x         y\n")


def test_tabwrite_blocks_end_at_a_line_without_the_column() -> None:
    # Go's tabwriter aligns column blocks of consecutive lines only.
    assert tabwrite("aaaaaaaaaaaaaa\tb\nno tabs here\nc\td\n") == (
        "aaaaaaaaaaaaaa   b\nno tabs here\nc         d\n")


def test_tabwrite_counts_characters_not_bytes() -> None:
    assert tabwrite("é\tx\nab\ty\n") == "é         x\nab        y\n"
