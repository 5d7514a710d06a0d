"""The Go text/template subset, tabwriter alignment, durations and natural sort, against docker's output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from swarmsecrets.cli.format import (
    GoTime,
    NilMap,
    Row,
    Struct,
    Template,
    TemplateError,
    go_print,
    human_duration,
    natural_less,
    natural_sorted,
    parse_timestamp,
    pretty_print,
    render_list,
    since,
    tabwrite,
    to_json,
)

HEADERS = {"ID": "ID", "Name": "NAME", "Driver": "DRIVER", "CreatedAt": "CREATED", "UpdatedAt": "UPDATED",
           "Labels": "LABELS"}
TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}"


def secret(labels: dict[str, str] | None = None) -> Struct:
    return Struct("swarm.Secret", {
        "ID": "c282ee071b020d72a681856b4",
        "Version": Struct("swarm.Version", {"Index": 11}),
        "CreatedAt": GoTime("2026-11-28T04:58:11.084570000Z"),
        "UpdatedAt": GoTime("2026-11-28T04:58:12Z"),
        "Spec": Struct("swarm.SecretSpec", {"Name": "s1", "Labels": labels if labels else NilMap()}),
    })


def row(id_: str, name: str, created: str, labels: dict[str, str] | None = None) -> Row:
    labels = labels or {}
    return Row("formatter.secretContext", {
        "ID": id_, "Name": name, "Driver": "", "CreatedAt": created, "UpdatedAt": created,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
    }, HEADERS, labels)


def run(text: str, data: object) -> str:
    return Template(text).execute(data)


# --- fields and functions ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("{{.ID}}", "c282ee071b020d72a681856b4"),
    ("{{.Spec.Name}}", "s1"),
    ("{{.Version.Index}}", "11"),
    ("name={{.Spec.Name}}!", "name=s1!"),
    ("{{index .Spec.Labels \"env\"}}", "prod"),
    ("{{index .Spec.Labels \"missing\"}}", ""),
    ("{{.Spec.Labels.env}}", "prod"),
    ("{{.Spec.Labels.missing}}", "<no value>"),
    ("{{upper .Spec.Name}}", "S1"),
    ("{{lower \"ABC\"}}", "abc"),
    ("{{.Spec.Name | upper}}", "S1"),
    ("{{title \"hello world\"}}", "Hello World"),
    ("{{join (split \"a,b,c\" \",\") \"|\"}}", "a|b|c"),
    ("{{len .Spec.Labels}}", "2"),
    ("{{truncate .ID 5}}", "c282e"),
    ("{{pad .Spec.Name 1 2}}", " s1  "),
    ("{{.Spec.Labels}}", "map[env:prod tier:web]"),
    ("{{.CreatedAt}}", "2026-11-28 04:58:11.08457 +0000 UTC"),
    ("{{.UpdatedAt}}", "2026-11-28 04:58:12 +0000 UTC"),
    ("{{`raw\\n`}}", "raw\\n"),
    ("{{\"q\\\"t\"}}", 'q"t'),
    ("{{/* a comment */}}x", "x"),
    ("a {{- \" b \" -}} c", "a b c"),
    ("{{if .Spec.Labels}}L{{else}}none{{end}}", "L"),
    ("{{if eq .Spec.Name \"x\"}}1{{else if eq .Spec.Name \"s1\"}}2{{else}}3{{end}}", "2"),
    ("{{if and .ID (not .Spec.Labels.missing)}}y{{end}}", "y"),
    ("{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}};{{end}}", "env=prod;tier=web;"),
    ("{{range .Spec.Labels}}[{{.}}]{{end}}", "[prod][web]"),
    ("{{$n := .Spec.Name}}{{$n}}{{$n}}", "s1s1"),
    ("{{range $k, $v := .Spec.Labels}}{{$.Spec.Name}}{{end}}", "s1s1"),
])
def test_execute(text: str, want: str) -> None:
    assert run(text, secret({"tier": "web", "env": "prod"})) == want


def test_json_of_struct_keeps_field_order_and_sorts_maps() -> None:
    assert run("{{json .}}", secret({"b": "2", "a": "1"})) == (
        '{"ID":"c282ee071b020d72a681856b4","Version":{"Index":11},'
        '"CreatedAt":"2026-11-28T04:58:11.084570000Z","UpdatedAt":"2026-11-28T04:58:12Z",'
        '"Spec":{"Name":"s1","Labels":{"a":"1","b":"2"}}}')
    assert run("{{json .Spec.Labels}}", secret({"b": "2", "a": "1"})) == '{"a":"1","b":"2"}'


def test_nil_map_is_null_in_json_and_empty_in_templates() -> None:
    s = secret()
    assert run("{{json .Spec.Labels}}", s) == "null"
    assert run("{{.Spec.Labels}}|{{if .Spec.Labels}}x{{end}}|{{range .Spec.Labels}}x{{else}}e{{end}}", s) == \
        "map[]||e"
    assert run("{{index .Spec.Labels \"k\"}}", s) == ""


def test_json_is_not_html_escaped_and_keeps_unicode() -> None:
    assert run("{{json .}}", {"k": "<a&b> é"}) == '{"k":"<a&b> é"}'


def test_struct_omitempty_and_nil_fields_leave_json() -> None:
    st = Struct("T", {"A": "", "B": None, "C": False, "D": 0}, omitempty=("A", "C"))
    assert to_json(st) == '{"D":0}'
    assert to_json(st, indent=4) == '{\n    "D": 0\n}'


def test_row_label_method_and_json() -> None:
    r = row("id1", "s1", "2 hours ago", {"com.example.team": "blue"})
    assert run('{{.Label "com.example.team"}}|{{.Label "nope"}}', r) == "blue|"
    assert run("{{json .}}", r) == ('{"CreatedAt":"2 hours ago","Driver":"","ID":"id1",'
                                    '"Labels":"com.example.team=blue","Name":"s1","UpdatedAt":"2 hours ago"}')


# --- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("{{.Foo}}", 'template: :1:2: executing "" at <.Foo>: can\'t evaluate field Foo in type swarm.Secret'),
    ("ab {{.Spec.Nope}}",
     'template: :1:5: executing "" at <.Spec.Nope>: can\'t evaluate field Nope in type swarm.SecretSpec'),
    ("x\n  {{.Bad}}",
     'template: :2:4: executing "" at <.Bad>: can\'t evaluate field Bad in type swarm.Secret'),
    ("{{upper .Version.Index}}",
     'template: :1:2: executing "" at <upper .Version.Index>: error calling upper: '
     "wrong type for value; expected string; got int"),
    ("{{index .Spec 1}}",
     'template: :1:2: executing "" at <index .Spec 1>: error calling index: '
     "can't index item of type swarm.SecretSpec"),
    ("{{.ID.Foo}}", 'template: :1:2: executing "" at <.ID.Foo>: can\'t evaluate field Foo in type string'),
])
def test_execution_errors(text: str, want: str) -> None:
    with pytest.raises(TemplateError) as exc:
        run(text, secret())
    assert str(exc.value) == want


def test_unknown_row_field_names_docker_context_type() -> None:
    with pytest.raises(TemplateError) as exc:
        run("{{.Foo}}", row("i", "n", "now"))
    assert str(exc.value) == ('template: :1:2: executing "" at <.Foo>: '
                              "can't evaluate field Foo in type *formatter.secretContext")


@pytest.mark.parametrize(("text", "want"), [
    ("{{nope .}}", 'template: :1: function "nope" not defined'),
    ("{{.ID", "template: :1: unclosed action"),
    ("{{if .ID}}x", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("a\n{{else}}", "template: :2: unexpected {{else}}"),
    ("{{}}", "template: :1: missing value for command"),
    ("{{.ID | }}", "template: :1: missing value for command"),
    ("{{.ID ! }}", 'template: :1: unexpected "!" in command'),
])
def test_parse_errors(text: str, want: str) -> None:
    with pytest.raises(TemplateError) as exc:
        Template(text)
    assert str(exc.value) == want


def test_errors_are_one_line() -> None:
    with pytest.raises(TemplateError) as exc:
        run("{{.A}}\n{{.B}}", secret())
    assert "\n" not in str(exc.value)


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


# --- tabwriter ---------------------------------------------------------------------------------------

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


# --- values ------------------------------------------------------------------------------------------

def test_go_time_string_forms() -> None:
    assert GoTime("2026-11-28T04:58:11.000000000Z").go_string() == "2026-11-28 04:58:11 +0000 UTC"
    assert GoTime("2026-11-28T04:58:11.5+02:00").go_string() == "2026-11-28 04:58:11.5 +0200 +0200"
    assert GoTime("not a time").go_string() == "not a time"


def test_pretty_print_like_docker() -> None:
    assert pretty_print("ready") == "Ready"
    assert pretty_print("REACHABLE") == "Reachable"
    assert pretty_print("2026-11-28 04:58:11 +0000 UTC") == "2026-11-28 04:58:11 +0000 utc"
    assert pretty_print("") == ""


def test_go_print() -> None:
    assert go_print(True) == "true"
    assert go_print(["a", "b"]) == "[a b]"
    assert go_print(None) == "<nil>"


# --- durations ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "want"), [
    (-5, "Less than a second"),
    (0.999, "Less than a second"),
    (1, "1 second"),
    (1.9, "1 second"),
    (2, "2 seconds"),
    (59, "59 seconds"),
    (60, "About a minute"),
    (119, "About a minute"),
    (120, "2 minutes"),
    (59 * 60 + 59, "59 minutes"),
    (3600, "About an hour"),
    (89 * 60, "About an hour"),
    (90 * 60, "2 hours"),
    (47 * 3600, "47 hours"),
    (48 * 3600, "2 days"),
    (13 * 86400, "13 days"),
    (14 * 86400, "2 weeks"),
    (59 * 86400, "8 weeks"),
    (60 * 86400, "2 months"),
    (729 * 86400, "24 months"),
    (730 * 86400, "2 years"),
])
def test_human_duration(seconds: float, want: str) -> None:
    assert human_duration(seconds) == want


def test_since() -> None:
    now = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
    assert since("2026-11-28T04:00:00.123456789Z", now) == "2 hours ago"
    assert since((now - timedelta(seconds=28)).isoformat(), now) == "28 seconds ago"
    assert since("", now) == ""
    assert since("2026-13-40T00:00:00Z", now) == ""


def test_parse_timestamp_nanoseconds() -> None:
    ts = parse_timestamp("2026-11-28T04:58:11.084570123Z")
    assert ts == datetime(2026, 11, 28, 4, 58, 11, 84570, tzinfo=UTC)


# --- natural sort ------------------------------------------------------------------------------------

def test_natural_sort_like_docker() -> None:
    names = ["10-foo", "2-foo", "1-foo", "zeta", "alpha", "Beta", "a02", "a2", "a1", "a10", "a"]
    assert natural_sorted(names, key=lambda s: s) == [
        "1-foo", "2-foo", "10-foo", "Beta", "a", "a1", "a2", "a02", "a10", "alpha", "zeta"]


def test_natural_less_is_strict() -> None:
    assert not natural_less("x1", "x1")
    assert natural_less("x", "x1")
    assert not natural_less("x1", "x")
