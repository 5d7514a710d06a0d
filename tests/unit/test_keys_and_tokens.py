"""Keys, unlock keys, join tokens and node certificates."""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

import pytest

from swarmsecrets import errors
from swarmsecrets.ca import certs, tokens
from swarmsecrets.crypto import keys
from swarmsecrets.ids import new_id


def test_ids_are_25_base36_chars() -> None:
    seen = {new_id() for _ in range(2000)}
    assert len(seen) == 2000
    assert all(len(i) == 25 and set(i) <= set("0123456789abcdefghijklmnopqrstuvwxyz") for i in seen)


def test_unlock_key_format_round_trips_and_rejects_garbage() -> None:
    k = keys.new_key()
    text = keys.format_unlock_key(k)
    assert text.startswith("SWMKEY-1-") and len(text) == 52
    assert keys.parse_unlock_key(text) == k
    for bad in ("SWMKEY-1-short", "nope", text[:-2], "SWMKEY-2-" + text[9:]):
        with pytest.raises(errors.InvalidArgument, match="invalid key string"):
            keys.parse_unlock_key(bad)


def test_wrapped_keys_without_autolock(tmp_path: Path) -> None:
    w = keys.WrappedKeys(str(tmp_path / "keys"))
    dek, ca_key = keys.new_key(), b"-----BEGIN PRIVATE KEY-----\nabc\n"
    w.store(dek, ca_key, None)
    assert w.load()[:3] == (dek, ca_key, None) and not w.holds_node_key()
    for name in ("kek", "manager-keys.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "keys" / name).st_mode) == 0o600
    raw = (tmp_path / "keys" / "manager-keys.json").read_bytes()
    assert dek not in raw and b"abc" not in raw


def test_wrapped_keys_with_autolock_need_the_unlock_key(tmp_path: Path) -> None:
    w = keys.WrappedKeys(str(tmp_path / "keys"))
    dek, unlock = keys.new_key(), keys.new_key()
    w.store(dek, b"ca", unlock, b"node-key")
    assert not (tmp_path / "keys" / "kek").exists()
    assert w.autolocked() and w.holds_node_key()
    assert b"node-key" not in (tmp_path / "keys" / "manager-keys.json").read_bytes()
    with pytest.raises(errors.FailedPrecondition):
        w.load()
    with pytest.raises(errors.InvalidArgument, match="invalid key provided"):
        w.load(keys.new_key())
    assert w.load(unlock)[:3] == (dek, b"ca", b"node-key")
    with pytest.raises(ValueError):
        w.store(dek, b"ca", unlock)  # autolock without the node key would leave it in clear


def test_turning_autolock_off_and_on_rewraps_under_the_right_key(tmp_path: Path) -> None:
    w = keys.WrappedKeys(str(tmp_path / "keys"))
    dek, unlock = keys.new_key(), keys.new_key()
    w.store(dek, b"ca", unlock, b"node-key")
    w.store(dek, b"ca", None)
    assert (tmp_path / "keys" / "kek").exists() and not w.autolocked()
    assert w.load()[:3] == (dek, b"ca", None)
    w.store(dek, b"ca", unlock, b"node-key")
    assert not (tmp_path / "keys" / "kek").exists()
    assert w.load(unlock)[:3] == (dek, b"ca", b"node-key")


def test_memory_file_is_a_path_to_memory_only() -> None:
    ca = certs.create_root_ca()
    key, csr = certs.generate_key_and_csr()
    cert = certs.issue_node_cert(ca, csr, node_id="a" * 25, role="manager", cluster_id="b" * 25,
                                 raft_addr="127.0.0.1:2")
    with keys.memory_file(cert) as cert_path, keys.memory_file(key) as key_path:
        assert os.readlink(key_path).startswith("/memfd:")
        certs.server_context(cert_path, key_path, ca.cert_pem)
    assert not os.path.exists(key_path)


def test_join_tokens_pin_the_ca() -> None:
    ca = certs.create_root_ca()
    tok = tokens.new_token(ca.cert_pem)
    text = str(tok)
    assert text.startswith("SWMTKN-1-") and len(text) == 85
    assert tokens.parse_token(text).ca_digest == certs.ca_digest(ca.cert_pem)
    assert certs.ca_digest(certs.create_root_ca().cert_pem) != tok.ca_digest
    for bad in ("SWMTKN-1-abc-def", text + "x", text.replace("SWMTKN", "SWMKEY")):
        with pytest.raises(errors.InvalidArgument, match="invalid join token"):
            tokens.parse_token(bad)


def test_node_certificates_carry_identity_from_the_ca_not_the_csr() -> None:
    ca = certs.create_root_ca()
    _, csr = certs.generate_key_and_csr()
    pem = certs.issue_node_cert(ca, csr, node_id="n" * 25, role="manager", cluster_id="c" * 25,
                                raft_addr="127.0.0.1:4243")
    ident = certs.identity_from_pem(pem)
    assert (ident.node_id, ident.role, ident.cluster_id) == ("n" * 25, "manager", "c" * 25)
    assert ident.raft_addrs == ("127.0.0.1:4243",)
    wpem = certs.issue_node_cert(ca, csr, node_id="w" * 25, role="worker", cluster_id="c" * 25,
                                 raft_addr="127.0.0.1:4243")
    assert certs.identity_from_pem(wpem).role == "worker"
    assert certs.identity_from_pem(wpem).raft_addrs == ()


def test_wrapped_keys_remember_which_unlock_key_change_they_follow(tmp_path: Path) -> None:
    w = keys.WrappedKeys(str(tmp_path / "keys"))
    w.store(keys.new_key(), b"ca", keys.new_key(), b"node-key")
    assert w.as_of() == 0
    w.store(keys.new_key(), b"ca", keys.new_key(), b"node-key", as_of=42)
    assert w.as_of() == 42


def test_join_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every token check goes through hmac.compare_digest, whose time does not depend on where the
    presented token first differs (a timing probe learns nothing of the secret part)."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = str(tokens.new_token(certs.create_root_ca().cert_pem))
    assert tokens.same_token(f" {token}\n", token)
    assert not tokens.same_token(token[:-1] + ("0" if token[-1] != "0" else "1"), token)
    assert len(compared) == 2
