"""The file-descriptor limit of a server process, and the connection cap derived from it.

Every open connection holds a descriptor. With the common soft limit of 1,024 a worker
that accepts more connections than that fails every ``accept()`` (EMFILE) and also
cannot open its store, so each worker raises its soft limit to the hard limit at start
(no privilege is needed for that) and caps its connections below it
(``server.max_connections``, ``scep_ca.server.connections``).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# Descriptors kept back for everything that is not an admitted client connection: the
# store (SQLite database, WAL and shared-memory files, or PostgreSQL sockets), the
# listening socket, the event loop's own, pipes, logs (an idle worker holds about 12),
# and one accept burst: asyncio accepts up to the listen backlog (128) connections in
# one go before the cap can close any of them.
_RESERVE = 64 + 128


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard
        if hard == resource.RLIM_INFINITY:
            # Linux refuses an infinite RLIMIT_NOFILE; nr_open (1,048,576 by default) is the ceiling.
            target = 1_048_576
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """Connections one worker admits: ``server.max_connections``, or (0) what the fd limit leaves.

    A configured value above what the descriptors allow is kept (the operator may know
    better, e.g. a limit raised later), but ``run_server`` warns about it.
    """
    if configured > 0:
        return configured
    return max(1, fd_limit - fd_reserve(fd_limit))


def fd_reserve(fd_limit: int) -> int:
    """Descriptors not given to connections: ``_RESERVE``, or half of a smaller limit."""
    return min(_RESERVE, fd_limit // 2)
