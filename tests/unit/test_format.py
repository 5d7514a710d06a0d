"""docker's list output (table, json, templates), casing and natural sort."""

from __future__ import annotations

import json

import pytest

from swarmsecrets.cli.format import natural_less, natural_sorted, pretty_print, render_list
from swarmsecrets.cli.gotemplate import Row, TemplateError
from tests.unit.test_gotemplate import row

TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}"


# --- list rendering ----------------------------------------------------------------------------------

def test_default_table_matches_docker_sample() -> None:
    rows = [row("c282ee071b020d72a681856b4", "s1", "1 second ago"),
            row("c64a136bda45529deab1a5b7e", "s2", "Less than a second ago")]
    assert render_list(TABLE, rows, rows[0]) == (
        "ID                          NAME      DRIVER    CREATED                  UPDATED\n"
        "c282ee071b020d72a681856b4   s1                  1 second ago             1 second ago\n"
        "c64a136bda45529deab1a5b7e   s2                  Less than a second ago   Less than a second ago\n")


def test_empty_table_still_has_header() -> None:
    assert render_list(TABLE, [], row("", "", "")) == "ID        NAME      DRIVER    CREATED   UPDATED\n"


def test_table_with_escapes_and_header_names() -> None:
    rows = [row("id1", "alpha", "x", {"com.example.my-key": "v1"}), row("id2", "b", "x")]
    out = render_list('table {{.Name}}\\t{{.Label "com.example.my-key"}}\\t{{upper .Name}}\\t{{.Labels}}',
                      rows, rows[0])
    assert out == ("NAME      my key    NAME      LABELS\n"
                   "alpha     v1        ALPHA     com.example.my-key=v1\n"
                   "b                   B         \n")


def test_json_format_is_one_object_per_line() -> None:
    rows = [row("id1", "s1", "28 seconds ago"), row("id2", "s2", "1 second ago")]
    assert render_list("json", rows, rows[0]) == (
        '{"CreatedAt":"28 seconds ago","Driver":"","ID":"id1","Labels":"","Name":"s1",'
        '"UpdatedAt":"28 seconds ago"}\n'
        '{"CreatedAt":"1 second ago","Driver":"","ID":"id2","Labels":"","Name":"s2",'
        '"UpdatedAt":"1 second ago"}\n')


def test_plain_template_no_header_and_escapes() -> None:
    rows = [row("id1", "s1", "x"), row("id2", "s2", "x")]
    assert render_list("  {{.ID}}\\t{{.Name}}  ", rows, rows[0]) == "id1\ts1\nid2\ts2\n"
    assert render_list("{{.Name}}\\n", rows[:1], rows[0]) == "s1\n\n"


def test_header_functions_leave_column_names_alone() -> None:
    out = render_list("table {{json .Name}}\t{{lower .ID}}", [row("ID1", "s", "x")], row("", "", ""))
    assert out.splitlines() == ["NAME      ID", '"s"       id1']


def test_node_table_self_marker() -> None:
    headers = {"ID": "ID", "Self": "", "Hostname": "HOSTNAME"}
    rows = [Row("node.nodeContext", {"ID": "n1", "Self": True, "Hostname": "a"}, headers),
            Row("node.nodeContext", {"ID": "n2", "Self": False, "Hostname": "b"}, headers)]
    out = render_list("table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}", rows, rows[0])
    assert out == "ID        HOSTNAME\nn1 *      a\nn2        b\n"


def test_label_needs_a_labelled_row() -> None:
    r = Row("node.nodeContext", {"ID": "n1"}, {"ID": "ID"})
    with pytest.raises(TemplateError, match="can't evaluate field Label in type \\*node.nodeContext"):
        render_list('{{.Label "x"}}', [r], r)

def test_pretty_print_like_docker() -> None:
    assert pretty_print("ready") == "Ready"
    assert pretty_print("REACHABLE") == "Reachable"
    assert pretty_print("2026-11-28 04:58:11 +0000 UTC") == "2026-11-28 04:58:11 +0000 utc"
    assert pretty_print("") == ""



# --- natural sort ------------------------------------------------------------------------------------

def test_natural_sort_like_docker() -> None:
    names = ["10-foo", "2-foo", "1-foo", "zeta", "alpha", "Beta", "a02", "a2", "a1", "a10", "a"]
    assert natural_sorted(names, key=lambda s: s) == [
        "1-foo", "2-foo", "10-foo", "Beta", "a", "a1", "a2", "a02", "a10", "alpha", "zeta"]


def test_natural_less_is_strict() -> None:
    assert not natural_less("x1", "x1")
    assert natural_less("x", "x1")
    assert not natural_less("x1", "x")



# --- values from remote callers: never raw control characters -----------------------------------------

def test_values_with_terminal_escapes_print_escaped_and_keep_the_table_aligned() -> None:
    rows = [row("id1", "evil\x1b]0;pwned\x07\x1b[2J", "x"), row("id2", "tab\there\nnext", "x")]
    out = render_list("table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}", rows, rows[0])
    assert "\x1b" not in out and "\x07" not in out
    assert out.splitlines() == [
        "ID        NAME                        CREATED",
        "id1       evil\\x1b]0;pwned\\a\\x1b[2J   x",
        "id2       tab\\there\\nnext             x",
    ]


def test_json_stays_exact_and_holds_no_raw_control_characters() -> None:
    name = "evil\x1b[2J\x7f\x9b\u202e\U000e0001\u00e9"
    out = render_list("json", [row("id1", name, "x")], None)
    assert out.isascii() is False and all(c.isprintable() for c in out.rstrip("\n"))
    assert json.loads(out)["Name"] == name
    assert '"Name":"evil\\u001b[2J\\u007f\\u009b\\u202e\\udb40\\udc01\u00e9"' in out
    # The json function inside a template is exact too: printing it escapes nothing more.
    assert render_list("{{json .Name}}", [row("id1", name, "x")], None) == out.split('"Name":')[1].split(",")[0] + "\n"
