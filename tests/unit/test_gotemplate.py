"""The Go text/template engine against Go's and docker's output: fields, functions, JSON, values, errors."""

from __future__ import annotations

import pytest

from swarmsecrets.cli.gotemplate import GoTime, NilMap, Row, Struct, Template, TemplateError, go_print, to_json

HEADERS = {"ID": "ID", "Name": "NAME", "Driver": "DRIVER", "CreatedAt": "CREATED", "UpdatedAt": "UPDATED",
           "Labels": "LABELS"}


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


# --- values ------------------------------------------------------------------------------------------

def test_go_time_string_forms() -> None:
    assert GoTime("2026-11-28T04:58:11.000000000Z").go_string() == "2026-11-28 04:58:11 +0000 UTC"
    assert GoTime("2026-11-28T04:58:11.5+02:00").go_string() == "2026-11-28 04:58:11.5 +0200 +0200"
    assert GoTime("not a time").go_string() == "not a time"


def test_go_print() -> None:
    assert go_print(True) == "true"
    assert go_print(["a", "b"]) == "[a b]"
    assert go_print(None) == "<nil>"

