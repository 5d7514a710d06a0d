"""The raft loop's wake-up pipe: one write wakes the loop for every proposal queued before it
reads the pipe, and none is lost once it has."""

from __future__ import annotations

import os

from pysyncobj.poller import PollPoller

from swarmsecrets.raft.node import _Wakeup


def _pending_bytes(fd: int) -> int:
    """How many wake-ups the pipe holds (read them out)."""
    try:
        return len(os.read(fd, 4096))
    except BlockingIOError:
        return 0


def test_proposals_queued_before_the_loop_reads_share_one_wakeup() -> None:
    poller = PollPoller()
    wakeup = _Wakeup(poller)
    try:
        for _ in range(100):
            wakeup.notify()
        assert _pending_bytes(wakeup._r) == 1
    finally:
        wakeup.close()


def test_a_proposal_after_the_loop_read_the_pipe_wakes_it_again() -> None:
    poller = PollPoller()
    wakeup = _Wakeup(poller)
    try:
        wakeup.notify()
        poller.poll(0)  # the loop reads the pipe
        assert _pending_bytes(wakeup._r) == 0
        wakeup.notify()
        poller.poll(0)
        wakeup.notify()
        assert _pending_bytes(wakeup._r) == 1
    finally:
        wakeup.close()
