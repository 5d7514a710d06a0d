"""The service rules of swarmsecrets.validation: secret references, names, users, env, update actions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from swarmsecrets import errors, validation
from swarmsecrets.validation import SecretRef


def refused(fn: Callable[..., object], *args: object) -> str:
    with pytest.raises(errors.InvalidArgument) as e:
        fn(*args)
    return e.value.message


# --- --secret ---------------------------------------------------------------------------------------

def test_short_form_defaults_like_docker() -> None:
    assert validation.parse_secret_spec("db_pass") == SecretRef("db_pass", "db_pass", "0", "0", 0o444)
    assert validation.parse_secret_spec("db_pass").mode == 292
    assert validation.parse_secret_spec("db_pass") == SecretRef("db_pass", "db_pass")  # the dataclass defaults


def test_long_form_every_field() -> None:
    ref = validation.parse_secret_spec("source=s2,target=password,uid=2000,gid=3000,mode=0400")
    assert ref == SecretRef("s2", "password", "2000", "3000", 256)


@pytest.mark.parametrize(("spec", "expected"), [
    ("src=s1", SecretRef("s1", "s1", "0", "0", 0o444)),
    ("SOURCE=s1,Target=sub/dir/f,UID=1,Gid=2,MODE=0o600", SecretRef("s1", "sub/dir/f", "1", "2", 0o600)),
    ("src=s1,target=", SecretRef("s1", "s1", "0", "0", 0o444)),
    ("src=s1,mode=0", SecretRef("s1", "s1", "0", "0", 0)),
    ("src=s1,mode=0777", SecretRef("s1", "s1", "0", "0", 0o777)),
    ('"src=s1","target=a,b"', SecretRef("s1", "a,b", "0", "0", 0o444)),
    ("src=s1,uid=4294967294", SecretRef("s1", "s1", "4294967294", "0", 0o444)),
])
def test_long_form_variants(spec: str, expected: SecretRef) -> None:
    assert validation.parse_secret_spec(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("src=s1,mode=400", "invalid mode specified: 400 (file modes are octal: did you mean 0400?)"),
    ("src=s1,mode=644", "invalid mode specified: 644 (file modes are octal: did you mean 0644?)"),
    ("src=s1,mode=0x1a4", "invalid mode specified: 0x1a4 (file modes are octal, e.g. 0400)"),
    ("src=s1,mode=0o", 'invalid mode specified: strconv.ParseUint: parsing "0o": invalid syntax'),
    ("src=s1,mode=0800", 'invalid mode specified: strconv.ParseUint: parsing "0800": invalid syntax'),
    ("src=s1,mode=", 'invalid mode specified: strconv.ParseUint: parsing "": invalid syntax'),
    ("src=s1,mode=01000", "invalid mode specified: 01000 (must be at most 0777)"),
    ("src=s1,mode=04755", "invalid mode specified: 04755 (must be at most 0777)"),
    ("s1,s2", "invalid field 's1' must be a key=value pair"),
    ("src=s1,ro", "invalid field 'ro' must be a key=value pair"),
    ("src=s1,Color=red", "invalid field in secret request: Color"),
    ("target=x", "source is required"),
    ("src=,target=x", "source is required"),
    ("", "source is required"),
    ("src=s1,uid=nginx", "invalid uid 'nginx': must be numeric"),
    ("src=s1,gid=-1", "invalid gid '-1': must be numeric"),
    ("src=s1,uid=", "invalid uid '': must be numeric"),
    ("src=s1,uid=4294967295", "invalid uid '4294967295': must be at most 4294967294"),
    ("src=s1,uid=\uff11", "invalid uid '\uff11': must be numeric"),
    ("bad name", errors.SECRET_NAME_INVALID),
])
def test_secret_spec_refusals(spec: str, message: str) -> None:
    assert refused(validation.parse_secret_spec, spec) == message


@pytest.mark.parametrize(("target", "reason"), [
    ("../x", "must be a relative path without '..'"),
    ("a/../../etc/passwd", "must be a relative path without '..'"),
    ("..", "must be a relative path without '..'"),
    ("/etc/passwd", "must be a relative path without '..'"),
    ("//x", "must be a relative path without '..'"),
    ("a//b", "must be a normalized path (did you mean 'a/b'?)"),
    ("./a", "must be a normalized path (did you mean 'a'?)"),
    ("a/", "must be a normalized path (did you mean 'a'?)"),
    ("a/./b", "must be a normalized path (did you mean 'a/b'?)"),
    (".", "must name a file"),
    ("", "must not be empty"),
    ("a" * 256, "must be at most 255 bytes"),
    ("é" * 128, "must be at most 255 bytes"),
])
def test_target_refusals(target: str, reason: str) -> None:
    assert refused(validation.validate_secret_target, target) == f"invalid secret target '{target}': {reason}"


def test_target_with_nul_or_bad_unicode_is_refused_printably() -> None:
    assert refused(validation.validate_secret_target, "a\x00b") == (
        "invalid secret target 'a\\x00b': must not contain NUL")
    assert refused(validation.validate_secret_target, "a\udcffb") == (
        "invalid secret target 'a\\udcffb': must be valid UTF-8")


@pytest.mark.parametrize("target", ["a", "a" * 255, "sub/dir/f", "a..b", ".hidden", "x.conf", "é" * 127])
def test_targets_accepted(target: str) -> None:
    validation.validate_secret_target(target)


def test_traversal_refused_through_the_spec_too() -> None:
    assert refused(validation.parse_secret_spec, "src=s1,target=../../etc/cron.d/x") == (
        "invalid secret target '../../etc/cron.d/x': must be a relative path without '..'")


def test_validate_secret_ref_checks_every_field() -> None:
    validation.validate_secret_ref(SecretRef("s1", "t"))
    assert refused(validation.validate_secret_ref, SecretRef("s1", "t", mode=0o1777)) == (
        "invalid mode specified: 01777 (must be at most 0777)")
    assert refused(validation.validate_secret_ref, SecretRef("s1", "/t")).startswith("invalid secret target")
    assert refused(validation.validate_secret_ref, SecretRef("s1", "t", gid="wheel")) == (
        "invalid gid 'wheel': must be numeric")
    assert refused(validation.validate_secret_ref, SecretRef("-s1", "t")) == errors.SECRET_NAME_INVALID


# --- conflicting targets ----------------------------------------------------------------------------

def test_conflicting_targets_swarm_text() -> None:
    refs = [SecretRef("a", "x"), SecretRef("b", "y"), SecretRef("c", "x")]
    assert refused(validation.check_conflicting_targets, refs) == (
        "secret references 'a' and 'c' have a conflicting target: 'x'")
    validation.check_conflicting_targets([SecretRef("a", "x"), SecretRef("a", "y")])


def test_duplicate_targets_docker_cli_text() -> None:
    refs = [validation.parse_secret_spec("s1"), validation.parse_secret_spec("src=s2,target=s1")]
    assert refused(validation.check_duplicate_targets, refs) == "duplicate secret target for s2 not allowed"
    validation.check_duplicate_targets([SecretRef("a", "x"), SecretRef("b", "y")])


# --- service names and modes ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["web", "a", "st_web", "web-1", "a--b", "A9", "a" * 63, "x_-_y"])
def test_service_names_accepted(name: str) -> None:
    validation.validate_service_name(name)


@pytest.mark.parametrize(("name", "message"), [
    ("", "meta: name must be provided"),
    ("-web", "name must be valid as a DNS name component"),
    ("web-", "name must be valid as a DNS name component"),
    ("_web", "name must be valid as a DNS name component"),
    ("my.web", "name must be valid as a DNS name component"),
    ("my web", "name must be valid as a DNS name component"),
    ("wéb", "name must be valid as a DNS name component"),
    ("a" * 64, "name must be 63 characters or fewer"),
])
def test_service_names_refused(name: str, message: str) -> None:
    assert refused(validation.validate_service_name, name) == message


def test_service_name_regex_is_not_exponential() -> None:
    # The SwarmKit pattern run as written by a backtracking engine takes ages on this.
    assert refused(validation.validate_service_name, "a" * 5000 + "!") == (
        "name must be valid as a DNS name component")


def test_service_mode_rules() -> None:
    validation.validate_service_mode("replicated", None)
    validation.validate_service_mode("replicated", 0)
    validation.validate_service_mode("global", None)
    assert refused(validation.validate_service_mode, "global", 2) == "replicas can only be used with replicated mode"
    assert refused(validation.validate_service_mode, "global", 0) == "replicas can only be used with replicated mode"
    assert refused(validation.validate_service_mode, "Global", None) == (
        "Unknown mode: Global, only replicated and global supported")


def test_availability() -> None:
    assert validation.parse_availability("DRAIN") == "drain"
    assert [validation.parse_availability(a) for a in ("active", "pause")] == ["active", "pause"]
    assert refused(validation.parse_availability, "paused") == 'invalid Availability: "paused"'


# --- user, uid/gid ----------------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["", "0", "1000", "1000:1000", "4294967294:0"])
def test_users_accepted(user: str) -> None:
    validation.validate_user(user)


@pytest.mark.parametrize(("user", "message"), [
    ("nginx", "invalid user 'nginx': must be UID[:GID] with numeric ids"),
    ("1000:staff", "invalid user '1000:staff': must be UID[:GID] with numeric ids"),
    ("1:2:3", "invalid user '1:2:3': must be UID[:GID] with numeric ids"),
    (":1", "invalid user ':1': must be UID[:GID] with numeric ids"),
    ("1000:", "invalid user '1000:': must be UID[:GID] with numeric ids"),
    ("4294967295", "invalid user '4294967295': ids must be at most 4294967294"),
])
def test_users_refused(user: str, message: str) -> None:
    assert refused(validation.validate_user, user) == message


def test_uid_gid_names_the_field() -> None:
    validation.validate_uid_gid("0", "gid")
    assert refused(validation.validate_uid_gid, "root", "gid") == "invalid gid 'root': must be numeric"
    assert refused(validation.validate_uid_gid, "+1") == "invalid uid '+1': must be numeric"


# --- update action ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("restart", "restart"),
    ("", "restart"),
    ("RESTART", "restart"),
    ("none", "none"),
    ("signal:HUP", "signal:SIGHUP"),
    ("signal:SIGHUP", "signal:SIGHUP"),
    ("signal:usr1", "signal:SIGUSR1"),
    ("Signal:sigterm", "signal:SIGTERM"),
    ("signal:IOT", "signal:SIGABRT"),
])
def test_update_actions(value: str, expected: str) -> None:
    assert validation.parse_update_action(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("reload", "invalid update action 'reload': expected restart, none or signal:<SIGNAL>"),
    ("signal", "invalid update action 'signal': expected restart, none or signal:<SIGNAL>"),
    ("signal:", "invalid update action 'signal:': expected restart, none or signal:<SIGNAL>"),
    ("restart:now", "invalid update action 'restart:now': expected restart, none or signal:<SIGNAL>"),
    ("signal:FOO", "invalid update action 'signal:FOO': unknown signal 'FOO'"),
    ("signal:1", "invalid update action 'signal:1': unknown signal '1'"),
    ("signal:SIG_IGN", "invalid update action 'signal:SIG_IGN': unknown signal 'SIG_IGN'"),
])
def test_update_actions_refused(value: str, message: str) -> None:
    assert refused(validation.parse_update_action, value) == message


# --- env --------------------------------------------------------------------------------------------

def test_env_like_docker() -> None:
    environ = {"HOME": "/root", "EMPTY": ""}
    got = validation.parse_env(["A=1", "B=x=y", "C=", "HOME", "EMPTY", "UNSET", "A=2"], environ)
    assert got == {"A": "2", "B": "x=y", "C": "", "HOME": "/root", "EMPTY": ""}


@pytest.mark.parametrize(("items", "message"), [
    (["=x"], "invalid environment variable: =x"),
    ([""], "invalid environment variable: "),
    (["A=x\x00y"], "invalid environment variable: A=x\\x00y"),
])
def test_env_refused(items: list[str], message: str) -> None:
    assert refused(validation.parse_env, items, {}) == message


def test_validate_env_for_the_manager() -> None:
    validation.validate_env({"A": "1"})
    assert refused(validation.validate_env, {"A=B": "1"}) == "invalid environment variable: A=B=1"
    assert refused(validation.validate_env, {"": "1"}) == "invalid environment variable: =1"
