"""The process's memory: a collector tuned for streaming, and a full collection after
each run, so that a long-lived daemon stays flat.

The CLI collects rarely (`tune_gc`), so a full collection may not come in dozens of
runs, and whatever a run leaves in reference cycles (a closure that names itself, an
exception kept with its traceback, and the chunks' rows they hold) waits for it. One
full collection when a run ends frees it. (glibc's malloc_trim after it gave no flatter
a curve: not worth a C call; see docs/performance.md.)
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

_collecting_rarely = False  # tune_gc was called: release_memory collects


def tune_gc() -> None:
    """Streaming millions of rows allocates tuples by the million, none of them cyclic:
    the default thresholds would run full collections over everything imported again
    and again (docs/performance.md). Collect less often."""
    global _collecting_rarely
    gc.set_threshold(50_000, 20, 10)
    _collecting_rarely = True


def release_memory() -> None:
    """A full collection, in a process that collects rarely (`tune_gc`): what the run
    just ended left in reference cycles. Elsewhere (a test process) the default
    thresholds collect often enough."""
    if not _collecting_rarely:
        return
    started = time.perf_counter()
    found = gc.collect()
    log.debug(
        "full collection after a run: %d unreachable objects, %.3f s",
        found,
        time.perf_counter() - started,
    )
