"""docker's list output and ordering: ``table``/``json``/template rendering of rows, casing, natural sort.

The template engine is ``gotemplate``, the column alignment ``tabwriter``; this module puts them
together the way docker's ``formatter.Context`` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from swarmsecrets.cli.gotemplate import Row, Template
from swarmsecrets.cli.tabwriter import tabwrite

__all__ = ["natural_less", "natural_sorted", "pretty_print", "render_list", "unescape_format"]


def pretty_print(s: str) -> str:
    """docker's ``command.PrettyPrint``: first letter upper, the rest lower (``ready`` -> ``Ready``)."""
    if len(s) <= 1:
        return s.lower()
    return s[0].upper() + s[1:].lower()



def unescape_format(spec: str) -> str:
    """docker turns the two-character sequences ``\\t`` and ``\\n`` in --format into tab and newline."""
    return spec.replace("\\t", "\t").replace("\\n", "\n")


def render_list(spec: str, rows: Sequence[Any], header: Row | None = None) -> str:
    """docker's formatter.Context.Write: ``table [TEMPLATE]``, ``json`` or a template, one row per line.

    ``header`` is any row of the kind listed: its ``header()`` names the table's columns.
    """
    is_table = spec.startswith("table")
    if is_table:
        text = spec[len("table"):]
    elif spec == "json":
        text = "{{json .}}"
    else:
        text = spec
    tmpl = Template(unescape_format(text.strip(" ")))
    body = "".join(tmpl.execute(row) + "\n" for row in rows)
    if not is_table:
        return body
    head = tmpl.execute(header.header(), header=True) + "\n" if header else ""
    return tabwrite(head + body)



def natural_less(a: str, b: str) -> bool:
    """fvbommel/sortorder.NaturalLess, which docker uses to sort list rows: digit runs compare as numbers."""
    s1, s2 = a.encode(), b.encode()
    i1 = i2 = 0
    while i1 < len(s1) and i2 < len(s2):
        c1, c2 = s1[i1], s2[i2]
        d1, d2 = 48 <= c1 <= 57, 48 <= c2 <= 57
        if d1 != d2:
            return d1
        if not d1:
            if c1 != c2:
                return c1 < c2
            i1 += 1
            i2 += 1
            continue
        while i1 < len(s1) and s1[i1] == 48:
            i1 += 1
        while i2 < len(s2) and s2[i2] == 48:
            i2 += 1
        nz1, nz2 = i1, i2
        while i1 < len(s1) and 48 <= s1[i1] <= 57:
            i1 += 1
        while i2 < len(s2) and 48 <= s2[i2] <= 57:
            i2 += 1
        if i1 - nz1 != i2 - nz2:
            return i1 - nz1 < i2 - nz2
        if s1[nz1:i1] != s2[nz2:i2]:
            return s1[nz1:i1] < s2[nz2:i2]
        if nz1 != nz2:
            return nz1 < nz2
    return len(s1) < len(s2)


def natural_sorted(items: Iterable[Any], key: Callable[[Any], str]) -> list[Any]:
    def cmp(x: Any, y: Any) -> int:
        kx, ky = key(x), key(y)
        return -1 if natural_less(kx, ky) else (1 if natural_less(ky, kx) else 0)

    return sorted(items, key=functools.cmp_to_key(cmp))
