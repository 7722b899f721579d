"""The CPU's cores shared among the threads at work right now, asked again before each piece of work.

The CPU engine decodes a long file as contiguous runs of windows, one decoding worker per core, and runs never take
exactly as long: 7 windows against 6, a 20 s window against a 30 s one. A thread count fixed when a call starts
left a core idle for the rest of the longer run: on 2 cores, the dev episode's 13 windows took 3.7-4.1 s when the
6-window worker had started first with both cores, 3.3 s when the 7-window one had (2026-12-06,
docs/benchmarks.md). Each encoder window and each decoder step asks `threads()` again, so a worker left alone
takes the cores the others gave back, and two workers never run more threads than there are cores. (The native
library runs a caller's extra threads on helpers it keeps, app/asr/native/kernels.h `podbrief::Pool`: a decoder
step is too short to start threads for.)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CoreShare:
    def __init__(self, cores: int) -> None:
        self.cores = max(1, cores)
        self._busy = 0
        self._lock = threading.Lock()
        self._depth = threading.local()

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """The calling thread is at work meanwhile. Nested calls from one thread (a decoding worker, then the
        encoder and decoder it calls) count it once."""
        depth: int = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._lock:
                self._busy += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                with self._lock:
                    self._busy -= 1

    @property
    def busy(self) -> int:
        """Threads at work now."""
        return self._busy

    def threads(self) -> int:
        """Threads for the caller's next piece of work: its share of the cores, at least 1."""
        return max(1, self.cores // max(1, self._busy))
