"""A Go ``text/template`` engine for docker's ``--format`` strings, with Go's value semantics.

Supported (as docker's CLI runs it): ``{{.Field}}`` and chains ``{{.A.B}}``, map keys as fields,
``{{.Label "k"}}`` on list rows, pipelines ``a | b``, parenthesized sub-pipelines, variables
(``{{$x := ...}}``, ``$`` for the root, ``$x.Field``), ``if``/``else``/``else if``/``end``,
``range`` (with ``$k, $v :=`` and ``else``), string/raw-string/int/bool/nil constants,
``{{-``/``-}}`` trimming and ``{{/* comments */}}``. Unlike Go, a printed value's non-printable characters
(terminal escapes, tabs and newlines inside a value) come out escaped (``\\x1b``, ``\\t``); the template's
own text is printed as written, and ``json`` output is exact (see ``to_json``). Functions: docker's template functions
(json, join, split, index, len, upper, lower, title, truncate, pad) and Go's eq, ne, not, and, or.
Not supported: ``define``/``template``/``block``/``with``/``break``/``continue``, user-defined
functions, float or char constants, comparison functions other than eq/ne, and printf.
Errors read like Go's (``template: :1:2: executing "" at <.Foo>: ...``).

Values: a ``Struct`` is a Go struct (unknown fields are errors, JSON keeps field order), a plain
``dict`` is a Go map (missing keys print ``<no value>``, JSON sorts keys), ``NilMap`` is a nil map
(JSON ``null``), ``GoTime`` is a time.Time, and a ``Row`` is one line of a list command (docker's
``secretContext``/``nodeContext``: flat fields, a header form and a ``Label`` method).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from swarmsecrets.cli.humanize import split_rfc3339
from swarmsecrets.validation import escape_nonprintable

__all__ = ["GoTime", "NilMap", "Row", "Struct", "Template", "TemplateError", "go_print", "to_json"]


class TemplateError(Exception):
    """A parse or execution error, worded like Go's (``template: :1:2: executing "" at <.Foo>: ...``)."""


class Struct(dict[str, Any]):
    """A Go struct value. Fields in ``omitempty`` are left out of JSON when falsy; None fields always."""

    def __init__(self, type_name: str, fields: dict[str, Any], omitempty: Iterable[str] = ()) -> None:
        super().__init__(fields)
        self.type_name = type_name
        self.omitempty = frozenset(omitempty)


class NilMap(dict[str, Any]):
    """A nil Go map: empty, printed as ``map[]``, encoded as JSON ``null``."""


class GoTime(str):
    """An RFC 3339 timestamp; JSON keeps the text, templates print it like Go's ``time.Time.String()``."""

    def go_string(self) -> str:
        parts = split_rfc3339(self)
        if parts is None:
            return str(self)
        date, clock, frac, zone = parts
        frac = (frac or "").rstrip("0")
        text = f"{date} {clock}" + (f".{frac}" if frac else "")
        if zone in ("Z", "+00:00"):
            return text + " +0000 UTC"
        offset = zone.replace(":", "")
        return f"{text} {offset} {offset}"



class Row:
    """One line of a list command: flat fields, a column header per field and, for secrets, ``.Label``."""

    def __init__(self, type_name: str, fields: dict[str, Any], headers: dict[str, str],
                 labels: dict[str, str] | None = None, *, is_header: bool = False) -> None:
        self.type_name = type_name
        self.fields = fields
        self.headers = headers
        self.labels = labels
        self.is_header = is_header

    def header(self) -> Row:
        """The context docker runs the template on to make the table's header line."""
        return Row(self.type_name, dict(self.headers), self.headers, self.labels, is_header=True)

    def label(self, name: str) -> str:
        if self.is_header:
            # docker's SubHeaderContext.Label: last dotted part, '-' and '_' as spaces.
            return name.split(".")[-1].replace("-", " ").replace("_", " ")
        return (self.labels or {}).get(name, "")


class _NoValue:
    """What a missing map key evaluates to (Go's invalid reflect.Value)."""

    def __repr__(self) -> str:
        return "<no value>"


_NO_VALUE = _NoValue()


# --- Go value semantics ---------------------------------------------------------------------------


def _go_type(v: Any) -> str:
    if isinstance(v, Struct):
        return v.type_name
    if isinstance(v, Row):
        return f"*{v.type_name}"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, GoTime):
        return "time.Time"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "map[string]string"
    if isinstance(v, list):
        return "[]string"
    return "<nil>"


def go_print(v: Any) -> str:
    """Go's ``%v`` for the values templates see."""
    if v is _NO_VALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, GoTime):
        return v.go_string()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, Struct):
        return "{" + " ".join(go_print(x) for x in v.values()) + "}"
    if isinstance(v, Row):
        return "&{" + " ".join(go_print(v.fields[k]) for k in sorted(v.fields)) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_print(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_print(x) for x in v) + "]"
    return str(v)


def _truth(v: Any) -> bool:
    if v is _NO_VALUE or v is None:
        return False
    if isinstance(v, (Struct, Row, GoTime)):
        return True
    return bool(v)


def _plain(v: Any) -> Any:
    if v is _NO_VALUE or isinstance(v, NilMap):
        return None
    if isinstance(v, Struct):
        return {k: _plain(x) for k, x in v.items()
                if x is not None and not (k in v.omitempty and not _truth(x))}
    if isinstance(v, Row):
        return {k: _plain(v.fields[k]) for k in sorted(v.fields)}
    if isinstance(v, dict):
        return {k: _plain(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, GoTime):
        return str(v)
    return v


def to_json(v: Any, indent: int | None = None) -> str:
    """JSON as Go's encoder writes it without HTML escaping: struct field order, sorted map keys.

    Unlike Go, every non-printable character in a string (DEL, C1 controls such as CSI, bidi
    overrides, separators) is written as a ``\\u`` escape too, as control characters below 0x20
    always are: the decoded values are exact and nothing in the text can drive a terminal."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(_plain(v), ensure_ascii=False, indent=indent, separators=separators)
    return text if text.isprintable() else _NONPRINTABLE_RE.sub(_json_escape, text)


# Candidates (anything but printable ASCII); _json_escape keeps the printable ones and the newlines of
# indentation (inside strings the encoder has already escaped newlines).
_NONPRINTABLE_RE = re.compile(r"[^ -~]")


def _json_escape(m: re.Match[str]) -> str:
    c = m.group()
    if c.isprintable() or c == "\n":
        return c
    code = ord(c)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"



# --- functions ------------------------------------------------------------------------------------


class _CallError(Exception):
    """A template function refused its arguments; reported as ``error calling <fn>: <message>``."""


def _want_str(v: Any) -> str:
    if not isinstance(v, str):
        raise _CallError(f"wrong type for value; expected string; got {_go_type(v)}")
    return str(v)


def _want_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _CallError(f"wrong type for value; expected int; got {_go_type(v)}")
    return v


def _join(items: Any, sep: Any) -> str:
    if not isinstance(items, list):
        raise _CallError(f"wrong type for value; expected []string; got {_go_type(items)}")
    return _want_str(sep).join(_want_str(x) for x in items)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict) and not isinstance(item, Struct):
            item = item.get(_want_str(key), "")
        elif isinstance(item, list):
            i = _want_int(key)
            if not 0 <= i < len(item):
                raise _CallError(f"index out of range: {i}")
            item = item[i]
        else:
            raise _CallError(f"can't index item of type {_go_type(item)}")
    return item


def _len(v: Any) -> int:
    if isinstance(v, (str, list, dict)) and not isinstance(v, (Struct, GoTime)):
        return len(v)
    raise _CallError(f"len of type {_go_type(v)}")


def _title(s: Any) -> str:
    return re.sub(r"(?<![^\W\d_])[^\W\d_]", lambda m: m.group(0).upper(), _want_str(s))


def _truncate(s: Any, n: Any) -> str:
    return _want_str(s)[: max(_want_int(n), 0)]


def _pad(s: Any, prefix: Any, suffix: Any) -> str:
    text = _want_str(s)
    return " " * _want_int(prefix) + text + " " * _want_int(suffix) if text else text


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _CallError("missing argument for comparison")
    return any(a == b for b in others)


def _and(*args: Any) -> Any:
    for a in args:
        if not _truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if _truth(a):
            return a
    return args[-1]


_FUNCS: dict[str, Callable[..., Any]] = {
    "json": lambda v: to_json(v),
    "join": _join,
    "split": lambda s, sep: _want_str(s).split(_want_str(sep)) if sep else list(_want_str(s)),
    "index": _index,
    "len": _len,
    "upper": lambda s: _want_str(s).upper(),
    "lower": lambda s: _want_str(s).lower(),
    "title": _title,
    "truncate": _truncate,
    "pad": _pad,
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "and": _and,
    "or": _or,
}

# docker's HeaderFunctions: in a table header these leave the column name alone.
_HEADER_FUNCS: dict[str, Callable[..., Any]] = {
    **_FUNCS,
    **{name: (lambda v, *_: v) for name in ("json", "split", "join", "title", "lower", "upper", "truncate")},
}


# --- parse tree -----------------------------------------------------------------------------------


@dataclass
class _Field:
    """``.A.B`` (chain of names) on dot, or on a variable when ``var`` is set."""

    chain: tuple[str, ...]
    text: str
    pos: int
    var: str | None = None


@dataclass
class _Var:
    name: str
    pos: int


@dataclass
class _Dot:
    pos: int


@dataclass
class _Ident:
    name: str
    pos: int


@dataclass
class _Const:
    value: Any
    pos: int


@dataclass
class _Cmd:
    args: list[Any]
    text: str
    pos: int


@dataclass
class _Pipe:
    decl: list[str]
    cmds: list[_Cmd]
    pos: int


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipe: _Pipe


@dataclass
class _If:
    pipe: _Pipe
    body: list[Any]
    else_body: list[Any] = field(default_factory=list)


@dataclass
class _Range:
    pipe: _Pipe
    body: list[Any]
    else_body: list[Any] = field(default_factory=list)


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<dot>\.)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<decl>:=)
  | (?P<punct>[|(),])
""", re.VERBOSE)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.actions = self._split(src)
        self.i = 0

    def error(self, pos: int, msg: str) -> TemplateError:
        line = self.src.count("\n", 0, pos) + 1
        return TemplateError(f"template: :{line}: {msg}")

    def _split(self, src: str) -> list[tuple[str, Any]]:
        """Text and action token lists, with ``{{-``/``-}}`` trimming applied."""
        out: list[tuple[str, Any]] = []
        pos = 0
        trim_next = False
        while True:
            start = src.find("{{", pos)
            text = src[pos:] if start < 0 else src[pos:start]
            if trim_next:
                text = text.lstrip(" \t\r\n")
            if start < 0:
                if text:
                    out.append(("text", text))
                return out
            inner = start + 2
            if src.startswith("- ", inner) or src.startswith("-\t", inner) or src.startswith("-\n", inner):
                text = text.rstrip(" \t\r\n")
                inner += 1
            if text:
                out.append(("text", text))
            toks, end, trim_next = self._lex_action(inner, start)
            if toks is not None:
                out.append(("action", toks))
            pos = end

    def _lex_action(self, pos: int, start: int) -> tuple[list[_Tok] | None, int, bool]:
        """The tokens of one action (None for a comment), where it ends, and whether it trims after."""
        src = self.src
        if src.startswith("/*", pos) or src.startswith(" /*", pos):
            close = src.find("*/", pos)
            end = src.find("}}", close + 2) if close >= 0 else -1
            if end < 0:
                raise self.error(start, "unclosed comment")
            return None, end + 2, src[close + 2:end].strip() == "-"
        toks: list[_Tok] = []
        while True:
            if src.startswith("}}", pos):
                return toks, pos + 2, False
            if src.startswith(" -}}", pos) or src.startswith("\t-}}", pos) or src.startswith("\n-}}", pos):
                return toks, pos + 4, True
            if pos >= len(src):
                raise self.error(start, "unclosed action")
            m = _TOKEN_RE.match(src, pos)
            if not m or m.lastgroup is None:
                raise self.error(pos, f'unexpected "{src[pos]}" in command')
            if m.lastgroup != "ws":
                toks.append(_Tok(m.lastgroup, m.group(0), pos))
            pos = m.end()

    # -- statement level --

    def parse(self) -> list[Any]:
        nodes, term = self._list()
        if term is not None:
            raise self.error(term[0].pos, f"unexpected {{{{{term[0].text}}}}}")
        return nodes

    def _list(self) -> tuple[list[Any], list[_Tok] | None]:
        """Nodes up to an ``{{end}}``/``{{else ...}}`` (its tokens are returned) or the end of input."""
        nodes: list[Any] = []
        while self.i < len(self.actions):
            kind, payload = self.actions[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(_Text(payload))
                continue
            toks: list[_Tok] = payload
            head = toks[0] if toks else _Tok("", "", 0)
            if head.kind == "ident" and head.text in ("end", "else"):
                return nodes, toks
            if head.kind == "ident" and head.text in ("if", "range"):
                nodes.append(self._block(head, toks[1:]))
            else:
                nodes.append(_Action(self._pipe(toks, max_decl=1)))
        return nodes, None

    def _block(self, head: _Tok, toks: list[_Tok]) -> _If | _Range:
        if not toks:
            raise self.error(head.pos, f"missing value for {head.text}")
        pipe = self._pipe(toks, max_decl=2 if head.text == "range" else 1)
        body, term = self._list()
        node: _If | _Range = _If(pipe, body) if head.text == "if" else _Range(pipe, body)
        if term is None:
            raise self.error(len(self.src), "unexpected EOF")
        if term[0].text == "else":
            if len(term) > 1 and term[1].text == "if" and head.text == "if":
                # {{else if X}} opens an if nested in the else branch; both share one {{end}}.
                node.else_body = [self._block(term[1], term[2:])]
                return node
            if len(term) > 1:
                raise self.error(term[1].pos, f'unexpected "{term[1].text}" in else')
            node.else_body, term = self._list()
            if term is None:
                raise self.error(len(self.src), "unexpected EOF")
        if term[0].text != "end":
            raise self.error(term[0].pos, f"expected end; found {term[0].text}")
        if len(term) > 1:
            raise self.error(term[1].pos, f'unexpected "{term[1].text}" in end')
        return node

    # -- pipelines --

    def _pipe(self, toks: list[_Tok], *, max_decl: int) -> _Pipe:
        decl: list[str] = []
        i = 0
        decl_at = next((j for j, t in enumerate(toks) if t.kind == "decl"), -1)
        if decl_at >= 0:
            names, commas = toks[:decl_at:2], toks[1:decl_at:2]
            if (decl_at % 2 == 0 or not 1 <= len(names) <= max_decl
                    or any(t.kind != "var" or "." in t.text for t in names)
                    or any(t.text != "," for t in commas)):
                raise self.error(toks[0].pos, "bad variable declaration")
            decl = [t.text for t in names]
            i = decl_at + 1
        cmds: list[_Cmd] = []
        while True:
            start = i
            args, i = self._args(toks, i)
            cmds.append(self._cmd(toks, start, i, args))
            if i < len(toks) and toks[i].text == "|":
                i += 1
                continue
            break
        if i < len(toks):
            raise self.error(toks[i].pos, f'unexpected "{toks[i].text}" in operand')
        return _Pipe(decl, cmds, toks[0].pos if toks else 0)

    def _cmd(self, toks: list[_Tok], start: int, end: int, args: list[Any]) -> _Cmd:
        if not args:
            pos = toks[start].pos if start < len(toks) else (toks[-1].pos if toks else 0)
            raise self.error(pos, "missing value for command")
        text = self.src[toks[start].pos: toks[end - 1].pos + len(toks[end - 1].text)]
        return _Cmd(args, text, toks[start].pos)

    def _args(self, toks: list[_Tok], i: int) -> tuple[list[Any], int]:
        args: list[Any] = []
        while i < len(toks) and toks[i].text not in ("|", ")"):
            t = toks[i]
            if t.text == "(":
                sub_start = i + 1
                depth, j = 1, i + 1
                while j < len(toks) and depth:
                    depth += {"(": 1, ")": -1}.get(toks[j].text, 0)
                    j += 1
                if depth:
                    raise self.error(t.pos, "unclosed left paren")
                args.append(self._pipe(toks[sub_start:j - 1], max_decl=0))
                i = j
                continue
            args.append(self._operand(t))
            i += 1
        return args, i

    def _operand(self, t: _Tok) -> Any:
        if t.kind == "field":
            return _Field(tuple(t.text[1:].split(".")), t.text, t.pos)
        if t.kind == "var":
            name, *chain = t.text.split(".")
            if chain:
                return _Field(tuple(chain), t.text, t.pos, var=name)
            return _Var(name, t.pos)
        if t.kind == "dot":
            return _Dot(t.pos)
        if t.kind == "str":
            try:
                return _Const(json.loads(t.text), t.pos)
            except ValueError:
                raise self.error(t.pos, f"bad string {t.text}") from None
        if t.kind == "raw":
            return _Const(t.text[1:-1], t.pos)
        if t.kind == "num":
            return _Const(int(t.text), t.pos)
        if t.kind == "ident":
            if t.text in ("true", "false"):
                return _Const(t.text == "true", t.pos)
            if t.text == "nil":
                return _Const(None, t.pos)
            if t.text not in _FUNCS:
                raise self.error(t.pos, f'function "{t.text}" not defined')
            return _Ident(t.text, t.pos)
        raise self.error(t.pos, f'unexpected "{t.text}" in operand')


# --- execution ------------------------------------------------------------------------------------


_MISSING = object()


class Template:
    """A parsed template; ``execute`` runs it on one value."""

    def __init__(self, text: str) -> None:
        self.src = text
        self.nodes = _Parser(text).parse()

    def execute(self, data: Any, *, header: bool = False) -> str:
        ex = _Exec(self.src, data, _HEADER_FUNCS if header else _FUNCS)
        out: list[str] = []
        ex.run(self.nodes, data, [{"$": data}], out)
        return "".join(out)


class _Exec:
    def __init__(self, src: str, root: Any, funcs: dict[str, Callable[..., Any]]) -> None:
        self.src = src
        self.root = root
        self.funcs = funcs

    def error(self, pos: int, what: str, msg: str) -> TemplateError:
        line = self.src.count("\n", 0, pos) + 1
        col = pos - (self.src.rfind("\n", 0, pos) + 1)
        if len(what) > 20:
            what = what[:20] + "..."
        return TemplateError(f'template: :{line}:{col}: executing "" at <{what}>: {msg}')

    def run(self, nodes: list[Any], dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        scopes = [*scopes, {}]
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipe(node.pipe, dot, scopes)
                if node.pipe.decl:
                    scopes[-1][node.pipe.decl[0]] = value
                else:
                    # Values come from remote callers (hostnames, task messages): never raw controls.
                    out.append(escape_nonprintable(go_print(value)))
            elif isinstance(node, _If):
                value = self.pipe(node.pipe, dot, scopes)
                local = {node.pipe.decl[0]: value} if node.pipe.decl else {}
                self.run(node.body if _truth(value) else node.else_body, dot, [*scopes, local], out)
            else:
                self.range(node, dot, scopes, out)

    def range(self, node: _Range, dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        value = self.pipe(node.pipe, dot, scopes)
        items: list[tuple[Any, Any]]
        if isinstance(value, (Struct, Row, GoTime, str, bool, int)):
            raise self.error(node.pipe.pos, node.pipe.cmds[0].text,
                             f"range can't iterate over {go_print(value)}")
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            items = []
        if not items:
            self.run(node.else_body, dot, scopes, out)
            return
        for key, elem in items:
            names = node.pipe.decl
            local = {names[-1]: elem} if names else {}
            if len(names) == 2:
                local = {names[0]: key, names[1]: elem}
            self.run(node.body, elem, [*scopes, local], out)

    def pipe(self, pipe: _Pipe, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.cmd(cmd, dot, scopes, value)
        return value

    def cmd(self, cmd: _Cmd, dot: Any, scopes: list[dict[str, Any]], final: Any) -> Any:
        first, rest = cmd.args[0], cmd.args[1:]
        if isinstance(first, _Ident):
            args = [self.arg(a, dot, scopes) for a in rest]
            if final is not _MISSING:
                args.append(final)
            try:
                return self.funcs[first.name](*args)
            except TypeError:
                raise self.error(first.pos, cmd.text,
                                 f"wrong number of args for {first.name}: got {len(args)}") from None
            except _CallError as e:
                raise self.error(first.pos, cmd.text, f"error calling {first.name}: {e}") from None
        if isinstance(first, _Field):
            args = [self.arg(a, dot, scopes) for a in rest]
            if final is not _MISSING:
                args.append(final)
            receiver = self.var(first.var, first, scopes) if first.var else dot
            return self.field(receiver, first, args)
        if rest or final is not _MISSING:
            raise self.error(cmd.pos, cmd.text, f"can't give argument to non-function {cmd.text.split()[0]}")
        return self.arg(first, dot, scopes)

    def arg(self, node: Any, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Var):
            return self.var(node.name, node, scopes)
        if isinstance(node, _Field):
            receiver = self.var(node.var, node, scopes) if node.var else dot
            return self.field(receiver, node, [])
        if isinstance(node, _Pipe):
            return self.pipe(node, dot, scopes)
        raise self.error(node.pos, node.name, f"can't use function {node.name} as a value")

    def var(self, name: str, node: Any, scopes: list[dict[str, Any]]) -> Any:
        for scope in reversed(scopes):
            if name in scope:
                return scope[name]
        raise self.error(node.pos, name, f"undefined variable: {name}")

    def field(self, receiver: Any, node: _Field, args: list[Any]) -> Any:
        for n, name in enumerate(node.chain):
            last = n == len(node.chain) - 1
            call_args = args if last else []
            if isinstance(receiver, Row):
                if name == "Label" and receiver.labels is not None:
                    if len(call_args) != 1 or not isinstance(call_args[0], str):
                        raise self.error(node.pos, node.text,
                                         f"wrong number of args for Label: want 1 got {len(call_args)}")
                    receiver = receiver.label(call_args[0])
                    continue
                if name not in receiver.fields:
                    raise self.error(node.pos, node.text,
                                     f"can't evaluate field {name} in type {_go_type(receiver)}")
                if call_args:
                    raise self.error(node.pos, node.text,
                                     f"wrong number of args for {name}: want 0 got {len(call_args)}")
                receiver = receiver.fields[name]
            elif isinstance(receiver, Struct):
                if name not in receiver:
                    raise self.error(node.pos, node.text,
                                     f"can't evaluate field {name} in type {_go_type(receiver)}")
                if call_args:
                    raise self.error(node.pos, node.text,
                                     f"{name} has arguments but cannot be invoked as function")
                receiver = receiver[name]
            elif isinstance(receiver, dict):
                if call_args:
                    raise self.error(node.pos, node.text,
                                     f"{name} is not a method but has arguments")
                receiver = receiver.get(name, _NO_VALUE)
            elif receiver is None or receiver is _NO_VALUE:
                raise self.error(node.pos, node.text, f"nil pointer evaluating {node.text}")
            else:
                raise self.error(node.pos, node.text,
                                 f"can't evaluate field {name} in type {_go_type(receiver)}")
        return receiver

