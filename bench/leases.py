"""Leases in the results store, so that identical commands started together share the work.

Two processes running the same run (same run id) would each invert every image: correct, since rows are
keyed by image, but twice the compute. Instead each process leases the next images it will invert in one
store transaction (``Store.claim_images``), skipping images already stored or leased by another live
process, and when only others' images remain it waits for them to land. The set-level metrics are
leased too (key ``finish``): one process computes them, the other waits for the run to be complete.

A lease is stale, and may be taken over, when its process is gone (same host: the pid no longer exists,
e.g. after ``kill -9``) or when it has expired (``ttl`` seconds, for a process on another host). Taking
over a lease can only duplicate work, never lose or corrupt it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any, Callable

HOST = socket.gethostname()
POLL_SECONDS = 0.5
MIN_TTL_SECONDS = 600.0


def new_owner() -> str:
    """``host:pid:random``: unique per process and per run of the harness."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(owner: str, expires: float) -> bool:
    """A lease another process may take: expired, or held by a process of this host that is gone."""
    if expires < time.time():
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host == HOST and pid_text.isdigit():
        return not _pid_alive(int(pid_text))
    return False


def ttl_for(batch_seconds: float | None) -> float:
    """Lease length: long enough that a slow batch is not taken over while it is being inverted."""
    return max(MIN_TTL_SECONDS, 10.0 * (batch_seconds or 0.0))


def wait_until(done: Callable[[], bool], *, on_wait: Callable[[], None] | None = None,
               poll: float = POLL_SECONDS) -> None:
    """Poll ``done()`` until it is true, calling ``on_wait`` once before the first sleep."""
    first = True
    while not done():
        if first and on_wait is not None:
            on_wait()
        first = False
        time.sleep(poll)


def claimable(store: Any, run_id: str, ids: list[str], indices: list[int], owner: str, limit: int,
              ttl: float) -> list[int]:
    return store.claim_images(run_id, [(i, ids[i]) for i in indices], owner, limit, ttl, is_stale)
