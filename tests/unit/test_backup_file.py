"""The backup file format (node/backup.py): what opens it, and the one-line refusals."""

from __future__ import annotations

import pytest

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from swarmsecrets.node import backup

DEK, CA_KEY = keys.new_key(), b"-----BEGIN PRIVATE KEY-----\nca\n-----END PRIVATE KEY-----\n"
SNAPSHOT = {"state_version": 2, "applied_index": 42, "state": {"secrets": {"s1": {"data": b"sealed-payload"}}}}


def contents(unlock: bytes | None = None) -> backup.Contents:
    return backup.Contents(cluster_id="c1", ca_cert=b"-----BEGIN CERTIFICATE-----\n", snapshot=SNAPSHOT,
                           keys=backup.ClusterKeys(data_keys=(DEK,), ca_key=CA_KEY, unlock_key=unlock),
                           applied_index=42)


def test_round_trip_and_nothing_in_clear() -> None:
    key = keys.new_key()
    data = backup.encode(contents(), key, backup.KEY_BACKUP)
    assert data.startswith(backup.MAGIC)
    for clear in (DEK, CA_KEY, b"sealed-payload", b"c1", b"PRIVATE KEY"):
        assert clear not in data
    got = backup.decode(data, key, "f")
    assert got.keys.data_keys == (DEK,) and got.keys.ca_key == CA_KEY and got.keys.unlock_key is None
    assert got.snapshot == SNAPSHOT and got.applied_index == 42 and got.cluster_id == "c1"


def test_an_autolocked_swarm_s_backup_opens_with_its_unlock_key_only() -> None:
    unlock = keys.new_key()
    data = backup.encode(contents(unlock), unlock, backup.KEY_UNLOCK)
    assert backup.decode(data, unlock, "f").keys.unlock_key == unlock
    with pytest.raises(errors.InvalidArgument, match="invalid key for f: it opens with the swarm's unlock key"):
        backup.decode(data, keys.new_key(), "f")


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda d: d[: len(d) - 10], "f is truncated: "),
    (lambda d: d[:10], "f is not a swarmsecrets backup file"),
    (lambda d: d[: len(backup.MAGIC) + 3], "f is truncated"),
    (lambda d: d + b"x", "f is damaged: 1 bytes after its end"),
    (lambda d: b"PK\x03\x04" + d[4:], "f is not a swarmsecrets backup file"),
    (lambda d: d[: len(backup.MAGIC)] + b"\x00\x02" + d[len(backup.MAGIC) + 2:], "format version 2"),
    # the key kind is sealed in: switching it in the clear header does not pass
    (lambda d: d[: len(backup.MAGIC) + 2] + b"\x01" + d[len(backup.MAGIC) + 3:], "f is damaged"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "invalid key for f"),
])
def test_bad_files_are_refused_with_one_line(mangle: object, message: str) -> None:
    key = keys.new_key()
    data = backup.encode(contents(), key, backup.KEY_BACKUP)
    assert backup.decode(data, key, "f")  # the same probe opens the intact file
    with pytest.raises(errors.InvalidArgument) as e:
        backup.decode(mangle(data), key, "f")  # type: ignore[operator]
    assert message in e.value.message and "\n" not in e.value.message
