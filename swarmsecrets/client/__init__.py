"""What every client of a local daemon shares: the retry policy for writes and the channel setup.

The CLI, the chaos workload and the benchmarks talk to a daemon's unix socket the same way; keeping the
policy here (not in the CLI) lets the chaos harness test exactly the contract the CLI ships.
"""

from swarmsecrets.client.channel import local_channel, never_connected
from swarmsecrets.client.retry import DEFAULT_RETRY, NOT_TRANSIENT, RetryPolicy, new_request_id

__all__ = [
    "DEFAULT_RETRY", "NOT_TRANSIENT", "RetryPolicy", "local_channel", "never_connected", "new_request_id",
]
