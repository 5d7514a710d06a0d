"""The rulebook's bounds on what remote callers send: hostnames, CSRs, labels, lists, request ids,
task statuses, secret targets, and the escaping of non-printable characters for display."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from swarmsecrets import errors, validation
from swarmsecrets.ca import certs
from swarmsecrets.validation import SecretRef


def refused(fn: Callable[..., object], *args: object) -> str:
    with pytest.raises(errors.SwarmError) as e:
        fn(*args)
    assert len(e.value.message) < 200, "an error line never echoes a huge value back"
    return e.value.message


# --- hostnames, versions, addresses, request ids ------------------------------------------------------

@pytest.mark.parametrize("hostname", ["vm", "box-1.example.com", "a_b", "x" * 253, "1"])
def test_hostnames_accepted(hostname: str) -> None:
    validation.validate_hostname(hostname)


@pytest.mark.parametrize("hostname, reason", [
    ("h" * 1_000_000, "must be at most 253 characters"),
    ("x" * 254, "must be at most 253 characters"),
    ("evil\x1b[2J", "only letters, digits"),
    ("two words", "only letters, digits"),
    ("line\nbreak", "only letters, digits"),
    ("-leading", "only letters, digits"),
    ("", "only letters, digits"),
    ("caf\u00e9", "only letters, digits"),
])
def test_hostnames_refused(hostname: str, reason: str) -> None:
    message = refused(validation.validate_hostname, hostname)
    assert message.startswith("invalid hostname '") and reason in message
    assert "\x1b" not in message and "\n" not in message


def test_engine_version_and_request_id() -> None:
    validation.validate_engine_version("0.1.0+dev")
    validation.validate_engine_version("")
    assert "invalid engine version" in refused(validation.validate_engine_version, "v" * 65)
    assert "invalid engine version" in refused(validation.validate_engine_version, "1.0\x1b[2J")
    validation.validate_request_id("0123abcd" * 4)
    assert "invalid request id" in refused(validation.validate_request_id, "r" * 129)
    assert "invalid request id" in refused(validation.validate_request_id, "a b")


def test_oversize_address_is_refused_before_it_is_parsed() -> None:
    assert "must be at most 300 characters" in refused(validation.validate_addr, "h" * 1_000_000 + ":1")
    assert refused(validation.validate_addr, "a\x1bb:1") == (
        "invalid address 'a\x1bb:1': not a valid IPv4 address or host name")


# --- certificate requests --------------------------------------------------------------------------------

def test_a_real_csr_passes() -> None:
    _, csr = certs.generate_key_and_csr()
    validation.validate_csr(csr)


@pytest.mark.parametrize("pem, reason", [
    (b"", "empty"),
    (b"A" * 2_000_000, "2000000 bytes exceeds the limit of 16384"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n", "not a PEM-encoded CSR"),
    (b"\x00\xff" * 10, "not a PEM-encoded CSR"),
])
def test_bad_csrs_are_refused(pem: bytes, reason: str) -> None:
    assert refused(validation.validate_csr, pem) == f"invalid certificate request: {reason}"


def test_a_csr_with_a_broken_signature_is_refused() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    good = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    # Swap in another key's public key: the signature no longer matches.
    mine = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = other.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    at = der.index(mine)
    der[at:at + len(mine)] = theirs
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    assert refused(validation.validate_csr, pem) == "invalid certificate request: bad signature"


# --- labels, commands, environments, list lengths ----------------------------------------------------------

def test_label_bounds() -> None:
    validation.validate_labels({f"k{i}": "v" * 2048 for i in range(64)})
    assert refused(validation.validate_labels, {f"k{i}": "" for i in range(65)}) == "too many labels: 65 (at most 64)"
    assert "name longer than 256 bytes" in refused(validation.validate_labels, {"k" * 257: ""})
    assert "value longer than 2048 bytes" in refused(validation.validate_labels, {"k": "v" * 2049})
    assert "empty name" in refused(validation.validate_labels, {"": "v"})
    assert "value longer" in refused(validation.validate_labels, {"k": "\u00e9" * 1025})  # bytes, not characters


def test_command_and_env_bounds() -> None:
    validation.validate_command(["/bin/sh", "-c", "x" * 60_000])
    assert refused(validation.validate_command, ["a"] * 1025) == "too many command arguments: 1025 (at most 1024)"
    assert refused(validation.validate_command, ["x" * 70_000]) == "command longer than 65536 bytes"
    assert "must not contain NUL" in refused(validation.validate_command, ["a\x00b"])
    assert refused(validation.validate_env, {f"K{i}": "" for i in range(1025)}) == (
        "too many environment variables: 1025 (at most 1024)")
    assert refused(validation.validate_env, {"K": "v" * 70_000}) == "environment larger than 65536 bytes"


def test_node_count_limit() -> None:
    validation.check_node_count(validation.MAX_NODES - 1)
    with pytest.raises(errors.FailedPrecondition) as e:
        validation.check_node_count(validation.MAX_NODES)
    assert e.value.message.startswith("the swarm has reached its limit of 10000 nodes")


# --- task status reports --------------------------------------------------------------------------------------

def test_status_text_is_clipped_at_a_character_boundary() -> None:
    assert validation.clip_status_text("short") == "short"
    exact = "x" * validation.MAX_STATUS_TEXT_BYTES
    assert validation.clip_status_text(exact) == exact
    for text in ("E" * 1_100_000, "\u00e9" * 600, "\U0001f600" * 300):
        clipped = validation.clip_status_text(text)
        assert clipped.endswith(validation.TRUNCATED_MARK)
        assert len(clipped.encode()) <= validation.MAX_STATUS_TEXT_BYTES
        assert text.startswith(clipped[:-len(validation.TRUNCATED_MARK)])


def test_task_status_checks() -> None:
    validation.check_task_status("t" * 25, "running")
    assert refused(validation.check_task_status, "t1", "x" * 100_000).startswith("invalid task state 'xxx")
    assert refused(validation.check_task_status, "t" * 65, "running").startswith("invalid task id")
    assert refused(validation.check_task_status, "", "running").startswith("invalid task id")


# --- secret targets -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["a\nb", "a\x1b[2J", "tab\there", "a\u202eb", "a\x7f"])
def test_targets_with_control_characters_are_refused(target: str) -> None:
    assert refused(validation.validate_secret_target, target).endswith(
        "must not contain control or other non-printable characters")


def test_a_target_inside_another_target_is_a_conflict() -> None:
    a, ab = SecretRef("s1", "a"), SecretRef("s2", "a/b")
    assert refused(validation.check_conflicting_targets, [a, ab]) == (
        "secret references 's1' and 's2' have a conflicting target: 'a/b' is inside 'a'")
    assert refused(validation.check_conflicting_targets, [SecretRef("s2", "a/b/c"), a]) == (
        "secret references 's1' and 's2' have a conflicting target: 'a/b/c' is inside 'a'")
    validation.check_conflicting_targets([SecretRef("s1", "a/x"), SecretRef("s2", "a/y"), SecretRef("s3", "ab")])


def test_secret_reference_count() -> None:
    refs = [SecretRef(f"s{i}", f"t{i}") for i in range(validation.MAX_SECRET_REFS + 1)]
    assert refused(validation.check_conflicting_targets, refs) == "too many secret references: 257 (at most 256)"


# --- escaping for display --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("plain", "plain"),
    ("caf\u00e9 \\x1b stays", "caf\u00e9 \\x1b stays"),
    ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\a\\x1b[2J"),
    ("a\tb\nc\rd", "a\\tb\\nc\\rd"),
    ("\x00\x7f", "\\x00\\x7f"),
    ("\x9b31m", "\\u009b31m"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
    ("\u2028", "\\u2028"),
    ("\U000e0001", "\\U000e0001"),
    ("\udcff", "\\udcff"),
])
def test_escape_nonprintable(raw: str, shown: str) -> None:
    assert validation.escape_nonprintable(raw) == shown
