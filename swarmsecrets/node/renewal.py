"""The node's certificate renews itself: when, how insistently, and what it says when it cannot.

Like Swarm, a node renews at a random point between 50 % and 80 % of its certificate's life
(lifetime = notAfter - time of issue; the backdated notBefore does not count), at once when the
certificate has expired already, and whenever asked (``trigger`` / ``renew_now``: a role change,
a new root CA). A failed attempt (no leader, managers unreachable) is retried with jittered
exponential backoff, never longer apart than a tenth of the certificate's life, so that a short
outage costs no certificate. The renewal itself (the RPC over the current mutual-TLS identity,
installing and saving the new one) is the daemon's ``renew`` callable.

A node the swarm no longer admits (its certificate expired, or the swarm does not know it) cannot
renew: the renewer says so once, in one line that tells the operator how to rejoin, and keeps
trying quietly (a wrong clock may be the cause).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from collections.abc import Awaitable, Callable

from cryptography import x509

from swarmsecrets import errors
from swarmsecrets.logfmt import event
from swarmsecrets.ca import certs

log = logging.getLogger(__name__)

RENEW_FROM, RENEW_TO = 0.5, 0.8  # of the certificate's life
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 60.0  # seconds

REJOIN = ("to rejoin, run 'swarmsecrets swarm leave --force' on this node, then "
          "'swarmsecrets swarm join --token <TOKEN> <MANAGER-HOST:PORT>' with the token that "
          "'swarmsecrets swarm join-token worker' (or manager) prints on a manager")


# A node whose certificate has less than this part of its lifetime left, and could not renew, says so.
EXPIRY_WARNING = 0.2


def lifetime(cert: x509.Certificate) -> datetime.timedelta:
    return cert.not_valid_after_utc - certs.issued_at(cert)


def renewal_delay(cert: x509.Certificate, now: datetime.datetime, fraction: float) -> float:
    """Seconds from ``now`` until the renewal at ``fraction`` (in [RENEW_FROM, RENEW_TO]) of the
    certificate's life; 0 when that point, or the certificate's end, has passed."""
    if now >= cert.not_valid_after_utc:
        return 0.0
    at = certs.issued_at(cert) + lifetime(cert) * fraction
    return max(0.0, (at - now).total_seconds())


def backoff_delay(attempt: int, life: datetime.timedelta) -> float:
    """The pause before retry ``attempt`` (0-based), before jitter: doubling from BACKOFF_FIRST,
    capped at BACKOFF_MAX and at a tenth of the certificate's life (never below BACKOFF_FIRST)."""
    cap = max(BACKOFF_FIRST, min(BACKOFF_MAX, life.total_seconds() / 10))
    return float(min(cap, BACKOFF_FIRST * 2 ** min(attempt, 30)))


def refusal_message(cert: x509.Certificate, error: Exception, now: datetime.datetime) -> str | None:
    """The one line for an attempt that failed because the swarm no longer admits this node, or
    None when the failure may pass (no leader, a manager unreachable)."""
    if isinstance(error, errors.NodeRemoved):
        return f"the swarm does not know this node any more (it was removed): {REJOIN}"
    if now >= cert.not_valid_after_utc:
        expired = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"this node's certificate expired at {expired} (the node was off longer than its "
                f"certificate's life) and the swarm no longer admits it: {REJOIN}")
    return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Renewer:
    """Runs the renewal schedule of one node identity. ``certificate``: the current certificate;
    ``renew``: one renewal attempt (raises on failure); ``refused``: told the one-line message
    when the swarm no longer admits the node, and ``""`` once a renewal succeeds again."""

    def __init__(self, *, certificate: Callable[[], x509.Certificate], renew: Callable[[], Awaitable[None]],
                 refused: Callable[[str], None], rng: random.Random | None = None) -> None:
        self._certificate = certificate
        self._renew = renew
        self._refused = refused
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="certificate renewal")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for w in self._waiters:
            if not w.done():
                w.set_exception(errors.Unavailable("certificate renewal stopped"))
        self._waiters = []

    def trigger(self) -> None:
        """Renew now (with the usual retries), whatever the schedule says."""
        self._wake.set()

    async def renew_now(self) -> None:
        """Renew now and return once a renewal that started after this call succeeded."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.trigger()
        await fut

    async def _run(self) -> None:
        while True:
            delay = renewal_delay(self._certificate(), _now(), self._rng.uniform(RENEW_FROM, RENEW_TO))
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            await self._attempt_until_renewed()
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _attempt_until_renewed(self) -> None:
        attempt = 0
        said = ""
        warned = False
        while True:
            cert = self._certificate()
            try:
                await self._renew()
            except Exception as e:  # noqa: BLE001 -- every failure is retried; the unexpected ones logged in full
                message = refusal_message(cert, e, _now())
                if message is not None and message != said:
                    log.error("%s", message)
                    self._refused(message)
                    said = message
                elif message is None:
                    log.info("certificate renewal failed, retrying: %s", e,
                             exc_info=not isinstance(e, errors.SwarmError))
                left = cert.not_valid_after_utc - _now()
                if not warned and left < lifetime(cert) * EXPIRY_WARNING:
                    until = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
                    event(log, logging.WARNING, "cert_expiring",
                          f"this node's certificate expires at {until} and could not be renewed yet",
                          not_after=until, seconds_left=int(left.total_seconds()), error=str(e))
                    warned = True
                pause = backoff_delay(attempt, lifetime(cert)) * self._rng.uniform(0.5, 1.0)
                attempt += 1
                await asyncio.sleep(pause)
                continue
            self.renewals += 1
            if said:
                self._refused("")
            until = self._certificate().not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            event(log, logging.INFO, "cert_renewed", f"certificate renewed: valid until {until}", not_after=until)
            return
