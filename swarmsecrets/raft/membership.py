"""Membership changes, fixed in pysyncobj's dynamic membership.

- One change at a time, enforced by the leader: stock never sets ``__changeClusterIDx``, so its
  one-change-at-a-time guard is dead code and two changes proposed together were both accepted
  (two overlapping majorities can then elect two leaders).
- Membership entries come from peers: they are decoded with the restricted unpickler (stock
  unpickles them freely) and must be ``['add'|'rem', 'HOST:PORT']`` with plain-string addresses.
- The member list is persisted whenever it changes, so a restart resumes with it.
- On the leader a removal takes effect when committed, not when appended (as etcd applies
  configuration changes): stock cut the member off at once, so it never learned that its
  removal committed and could not confirm a removal it asked for itself.
- A leader asked to remove itself (which pysyncobj refuses) hands leadership over first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pysyncobj import SyncObj
from pysyncobj.syncobj import _COMMAND_TYPE

from swarmsecrets.raft import wire

_MEMBERSHIP = bytes([_COMMAND_TYPE.MEMBERSHIP])


def check_addr(addr: str) -> None:
    """Raise ValueError unless ``addr`` is HOST:PORT naming one interface (no wildcard)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"raft address {addr!r} is not HOST:PORT")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        raise ValueError(f"raft address {addr!r} must name one interface, not a wildcard")


def encode_change(op: str, addr: str) -> bytes:
    """The payload of a membership entry: ['add'|'rem', 'HOST:PORT']."""
    return wire.dumps([op, addr])


def parse_change(payload: bytes) -> list[str] | None:
    """The change a membership payload asks for, or None if it is not a well-formed one."""
    try:
        request = wire.loads(payload)
    except Exception:
        return None
    if (isinstance(request, list) and len(request) == 2 and request[0] in ("add", "rem")
            and isinstance(request[1], str)):
        try:
            check_addr(request[1])
        except ValueError:
            return None
        return request
    return None


class MemberStore(Protocol):
    """Where the member list is persisted (the journal's metadata)."""

    def set_members(self, members: list[str]) -> None: ...


class MembershipMixin(SyncObj):  # type: ignore[misc]  # pysyncobj ships no type information
    """Membership fixes for a SyncObj subclass. The host class sets ``clock`` and ``_journal``
    before SyncObj.__init__ runs, and calls ``_remove_departed`` from its loop while
    ``_leaving`` is not empty."""

    clock: Callable[[], float]
    _journal: MemberStore

    def _init_membership(self) -> None:
        self._appending_removal = False
        self._leaving: dict[str, float] = {}  # removed members still sent the log (leader)

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> list[str] | None:
        if command[:1] != _MEMBERSHIP:
            return None
        return parse_change(command[1:])

    def _SyncObj__changeCluster(self, request: list[str]) -> bool:
        """Record the index the accepted change gets (it is appended right after this returns),
        so a second change is refused until the first is applied. A leader asked to remove
        itself hands leadership over, so the requester's retry succeeds."""
        if request[0] == "rem" and request[1] == self.selfNode.address:
            self.transferLeadership()
            return False
        self._appending_removal = request[0] == "rem"
        try:
            accepted = bool(super()._SyncObj__changeCluster(request))
        finally:
            self._appending_removal = False
        if accepted:
            self._SyncObj__changeClusterIDx = self._SyncObj__getCurrentLogIndex() + 1
        return accepted

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        """Persist the member list whenever it changes; on the leader, defer a removal until it
        is committed (see _leave_after_commit)."""
        addr = request[1]
        if self._appending_removal:  # the leader is appending a removal: only check it
            return any(n.address == addr for n in self.otherNodes)
        if self._leave_after_commit(request, reverse):
            return True
        changed = bool(super()._SyncObj__doChangeCluster(request, reverse))
        if changed:
            self._journal.set_members(self.members())
        return changed

    def _leave_after_commit(self, request: Any, reverse: bool) -> bool:
        """Leader applying a committed removal: keep sending the log to the member for one more
        heartbeat, so it learns the commit; _remove_departed removes it then."""
        if request[0] != "rem" or reverse or not self._isLeader():
            return False
        if not any(n.address == request[1] for n in self.otherNodes):
            return False
        self._leaving.setdefault(request[1], self.clock())
        return True

    def _remove_departed(self) -> None:
        period = self.conf.appendEntriesPeriod
        for addr, since in list(self._leaving.items()):
            if not self._isLeader() or self.clock() - since >= period:
                del self._leaving[addr]
                SyncObj._SyncObj__doChangeCluster(self, ["rem", addr])
                self._journal.set_members(self.members())

    def members(self) -> list[str]:
        """The member addresses; a member whose removal committed no longer counts, even while it
        is still sent the log for its last heartbeat."""
        return sorted(({self.selfNode.address} | {n.address for n in self.otherNodes}) - set(self._leaving))
