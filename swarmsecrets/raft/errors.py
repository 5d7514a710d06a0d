"""The raft library's own errors. A host maps them to its own error types at its edge."""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error the raft library raises to its caller."""


class Unavailable(RaftError):
    """The request certainly did not happen; it may succeed later (retry is safe)."""


class NoLeader(Unavailable):
    """No leader is known to this member (an election is under way, or no quorum)."""

    def __init__(self, message: str = "no raft leader is known to this member") -> None:
        super().__init__(message)


class StorageFailed(Unavailable):
    """This member's journal failed a write or an fsync: it stopped for good."""


class StorageFull(Unavailable):
    """This member cannot persist (its disk is full): it refuses proposals and acknowledges
    nothing until a write succeeds again, which it retries by itself. Reads still work.
    ``reason`` says what failed, e.g. "no space left on device (writing PATH)"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"raft: cannot persist: {reason}")
        self.reason = reason


class UnknownOutcome(RaftError):
    """The proposal was sent but no result came back in time: it may or may not be applied."""

    def __init__(self, message: str = "the raft proposal timed out; it may or may not have been applied") -> None:
        super().__init__(message)


class Refused(RaftError):
    """The leader refused the request (a membership change is pending, or it changes nothing)."""


class InvalidCommand(RaftError):
    """The command is not plain data, or its encoding exceeds the command size cap."""


class ApplyFailed(RaftError):
    """The state machine raised while applying the command (on every member alike)."""


class StorageError(Exception):
    """A journal write or sync failed. Fatal: after a failed fsync the kernel may have dropped the
    dirty pages, so a retry can succeed without the data; the member must stop, not carry on.
    Raised inside the raft loop; callers see StorageFailed."""


class DiskFull(Exception):
    """A journal or metadata write found no room (ENOSPC, EDQUOT). Not fatal: nothing that
    failed to reach the disk was acknowledged; the member holds its acknowledgements and
    retries. Raised inside the raft loop; callers see StorageFull."""


class PeerRefused(Exception):
    """Raised by a host's peer verifier: the certificate may not speak raft with us."""
