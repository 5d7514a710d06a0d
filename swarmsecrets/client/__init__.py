"""What every client of a local daemon shares: the local API client and the retry policy for writes.

The CLI, the chaos workload and the benchmarks talk to a daemon's unix socket the same way; keeping the
policy here (not in the CLI) lets the chaos harness test exactly the contract the CLI ships.
"""

from swarmsecrets.client.local import LocalClient, LocalError
from swarmsecrets.client.retry import DEFAULT_RETRY, NOT_TRANSIENT, RetryPolicy, new_request_id
from swarmsecrets.localhttp import Status

__all__ = [
    "DEFAULT_RETRY", "NOT_TRANSIENT", "LocalClient", "LocalError", "RetryPolicy", "Status", "new_request_id",
]
