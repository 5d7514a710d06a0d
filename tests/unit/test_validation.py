"""The shared input rules and their exact texts."""

from __future__ import annotations

import pytest

from swarmsecrets import errors
from swarmsecrets.validation import (
    MAX_SECRET_SIZE,
    SecretFilters,
    format_addr,
    parse_filters,
    parse_label,
    validate_addr,
    validate_secret_data,
    validate_secret_name,
)


def message(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(errors.InvalidArgument) as exc:
        fn(*args)
    assert exc.value.code.name == "INVALID_ARGUMENT"
    return exc.value.message


# --- names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "Z", "7", "db_password", "my-secret.v2", "a--b", "a..b", "a_-.b",
                                  "x" * 64, "ABCdef123"])
def test_valid_names(name: str) -> None:
    validate_secret_name(name)


def test_empty_name() -> None:
    assert message(validate_secret_name, "") == "name must be provided"


@pytest.mark.parametrize("name", ["x" * 65, "-a", "a-", ".a", "a.", "_a", "a_", "bad name", "a/b", "a:b",
                                  "é", "a\n", "\na", "a b", "-", "a!"])
def test_invalid_names(name: str) -> None:
    assert message(validate_secret_name, name) == (
        "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character "
        "must be [a-zA-Z0-9]")


# --- data --------------------------------------------------------------------------------------------

def test_size_limit_constant() -> None:
    assert MAX_SECRET_SIZE == 512000


@pytest.mark.parametrize("size", [1, 2, 511_999])
def test_data_sizes_accepted(size: int) -> None:
    validate_secret_data(b"\0" * size)


@pytest.mark.parametrize("size", [0, 512_000, 512_001, 1_024_000])
def test_data_sizes_refused(size: int) -> None:
    assert message(validate_secret_data, b"x" * size) == (
        "secret data must be larger than 0 and less than 512000 bytes")


# --- labels ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("arg", "want"), [
    ("a=b", ("a", "b")),
    ("a", ("a", "")),
    ("a=", ("a", "")),
    ("a=b=c", ("a", "b=c")),
    ("com.example.x=with space", ("com.example.x", "with space")),
    ("  k=v", ("k", "v")),
])
def test_parse_label(arg: str, want: tuple[str, str]) -> None:
    assert parse_label(arg) == want


@pytest.mark.parametrize("arg", ["", "=x", "  =x", "\t"])
def test_label_empty_name(arg: str) -> None:
    assert message(parse_label, arg) == f"invalid label '{arg}': empty name"


@pytest.mark.parametrize(("arg", "key"), [("a b=c", "a b"), ("a\tb", "a\tb"), ("ab =c", "ab ")])
def test_label_whitespace(arg: str, key: str) -> None:
    assert message(parse_label, arg) == f"label '{key}' contains whitespaces"


# --- addresses ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("arg", "default", "want"), [
    ("127.0.0.1:2377", 0, ("127.0.0.1", 2377)),
    ("10.0.0.1", 2377, ("10.0.0.1", 2377)),
    ("manager-1.example.com:4000", 0, ("manager-1.example.com", 4000)),
    ("eth0", 2377, ("eth0", 2377)),
    ("[::1]:2377", 0, ("::1", 2377)),
    ("[fe80::1]", 7, ("fe80::1", 7)),
    ("0.0.0.0:65535", 0, ("0.0.0.0", 65535)),
    ("h:1", 0, ("h", 1)),
])
def test_valid_addresses(arg: str, default: int, want: tuple[str, int]) -> None:
    assert validate_addr(arg, default) == want


@pytest.mark.parametrize(("arg", "default", "reason"), [
    ("", 2377, "missing host"),
    (":2377", 0, "missing host"),
    ("10.0.0.1", 0, "missing port (expected HOST:PORT)"),
    ("10.0.0.1:0", 0, "port must be a number between 1 and 65535"),
    ("10.0.0.1:65536", 0, "port must be a number between 1 and 65535"),
    ("10.0.0.1:http", 0, "port must be a number between 1 and 65535"),
    ("10.0.0.1:", 0, "port must be a number between 1 and 65535"),
    ("10.0.0.1:-1", 0, "port must be a number between 1 and 65535"),
    ("10.0.0.256:1", 0, "not a valid IPv4 address"),
    ("1.2.3:1", 0, "not a valid IPv4 address"),
    ("::1", 0, "IPv6 addresses must be in brackets, e.g. [::1]:2377"),
    ("[::1", 0, "missing ']'"),
    ("[::1]2377", 0, "expected ':PORT' after ']'"),
    ("[nothex]:1", 0, "not an IPv6 address inside [ ]"),
    ("bad_host:1", 0, "not a valid IPv4 address or host name"),
    ("-lead:1", 0, "not a valid IPv4 address or host name"),
    ("a b:1", 0, "not a valid IPv4 address or host name"),
    ("a..b:1", 0, "not a valid IPv4 address or host name"),
])
def test_invalid_addresses(arg: str, default: int, reason: str) -> None:
    text = message(validate_addr, arg, default)
    assert text == f"invalid address '{arg}': {reason}"
    assert "\n" not in text


def test_format_addr_round_trips() -> None:
    assert format_addr("10.0.0.1", 2377) == "10.0.0.1:2377"
    assert format_addr("::1", 2377) == "[::1]:2377"
    assert validate_addr(format_addr("::1", 5), 0) == ("::1", 5)


# --- filters -----------------------------------------------------------------------------------------

def test_parse_filters_all_keys() -> None:
    got = parse_filters(["id=ab", "name=db", "NAME = web ", "names=exact", "label=env", "label=tier=web", ""])
    assert got == SecretFilters(names=["exact"], name_prefixes=["db", "web"], id_prefixes=["ab"],
                                labels={"env": "", "tier": "web"})


def test_parse_filters_empty() -> None:
    assert parse_filters([]) == SecretFilters()


def test_unknown_filter() -> None:
    assert message(parse_filters, ["foo=bar"]) == "invalid filter 'foo'"


def test_malformed_filter() -> None:
    assert message(parse_filters, ["name"]) == "bad format of filter (expected name=value)"
