"""Session-wide rule: the suite leaves nothing behind (tests/leftovers.py says what counts).

When the session ends, any process the tests started that still runs (daemons, task processes), any
mount under the test temp dirs and any network namespace the tests created fails the run, named one by
one; they are then removed so that the next run starts clean.
"""

from __future__ import annotations

import sys

import pytest

from tests import leftovers


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform == "linux":
        leftovers.adopt_orphans()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if sys.platform != "linux" or getattr(session.config, "workerinput", None) is not None:
        return
    basetemp = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    found = leftovers.find(basetemp)
    leftovers.reap_zombies()
    if not found:
        return
    leftovers.remove(basetemp)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["the tests left these behind (now removed):", *(f"  {f}" for f in found)]
    if reporter is not None:
        reporter.write_sep("=", "leftovers", red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
