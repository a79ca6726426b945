"""The background writer: a thread that writes committed documents to Mongo, so that a
commit does not wait for the Mongo round trip.

Commits hand it parcels through a queue bounded in documents. It writes them in batches of
up to ``batch_size`` documents, waiting at most ``max_delay`` seconds for a batch to fill.
When idle it drains pending work (``sweep``), at once after a failure and then with growing
pauses while Mongo stays unavailable. ``close()`` writes what
is queued within a deadline and returns what it could not; its owner runs it at exit.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable

from .log_safety import log_failure
from .pending import Parcel

logger = logging.getLogger("audit_mongo")

MAX_SWEEP_PAUSE = 60.0


class BackgroundWriter:
    """Writes parcels from a bounded queue in its own thread.

    ``deliver(parcels)`` writes a batch and returns whether Mongo confirmed all of it;
    ``sweep()`` drains pending work and returns how many documents are still pending.
    """

    def __init__(
        self,
        deliver: Callable[[list[Parcel]], bool],
        sweep: Callable[[], int],
        *,
        max_documents: int = 10_000,
        batch_size: int = 1000,
        max_delay: float = 0.05,
        sweep_interval: float = 5.0,
        sweep_at_start: bool = True,
    ) -> None:
        if max_documents < 1 or batch_size < 1 or max_delay < 0 or sweep_interval <= 0:
            raise ValueError("queue and batch sizes must be positive, delays not negative")
        self.max_documents = max_documents
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.sweep_interval = sweep_interval
        # Without work left by an earlier process, the first sweep waits an interval: one
        # at once would claim the outbox rows of the first commits, which are queued here
        # too, and send their documents twice (stored once, but twice the traffic).
        self._first_sweep_delay = 0.0 if sweep_at_start else sweep_interval
        self._deliver = deliver
        self._sweep = sweep
        self._closed = False
        self._start()

    def _start(self) -> None:
        """A fresh queue and thread: at construction, and in a forked child (gunicorn
        --preload, Celery prefork), which inherits the queue's state but not the thread."""
        self._pid = os.getpid()
        self._queue: collections.deque[Parcel] = collections.deque()
        self._queued = 0  # documents in the queue
        self._writing: list[Parcel] = []  # the batch being written
        self._condition = threading.Condition()
        self._next_sweep = time.monotonic() + self._first_sweep_delay
        self._sweep_pause = self.sweep_interval
        self._thread = threading.Thread(target=self._run, name="audit_mongo-writer", daemon=True)
        self._thread.start()

    def _in_this_process(self) -> None:
        if self._pid != os.getpid():
            self._start()

    def submit(self, parcel: Parcel) -> bool:
        """Queue ``parcel``; False when the queue is full or closed (the caller decides)."""
        size = parcel.size
        self._in_this_process()
        with self._condition:
            if self._closed or (self._queue and self._queued + size > self.max_documents):
                return False
            self._queue.append(parcel)
            self._queued += size
            # Wake the writer for its first parcel or a full batch, not for every parcel
            # of the batch it is gathering: each wake-up takes the GIL from the application.
            if len(self._queue) == 1 or self._queued >= self.batch_size:
                self._condition.notify_all()
        return True

    def queued(self) -> list[Parcel]:
        """The parcels waiting, and those being written."""
        self._in_this_process()
        with self._condition:
            return [*self._writing, *self._queue]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been written (or failed); False on timeout."""
        self._in_this_process()
        with self._condition:
            return self._condition.wait_for(lambda: not self._queue and not self._writing, timeout)

    def close(self, timeout: float) -> list[Parcel]:
        """Stop taking parcels, write those queued for up to ``timeout`` seconds, and
        return those left unwritten."""
        if self._pid != os.getpid():  # a forked child that never queued anything
            self._closed = True
            return []
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout)
        with self._condition:
            left = list(self._queue)
            self._queue.clear()
            self._queued = 0
        return left

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._write(batch)
            elif time.monotonic() >= self._next_sweep:
                self._drain_pending()

    def _take(self) -> list[Parcel] | None:
        """The next batch; [] when idle for a while; None once closed and empty."""
        with self._condition:
            if not self._queue and not self._closed:
                self._condition.wait(max(self._next_sweep - time.monotonic(), 0.01))
            if not self._queue:
                return None if self._closed else []
            deadline = time.monotonic() + self.max_delay
            while self._queued < self.batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            batch = [self._queue.popleft()]
            size = batch[0].size
            while self._queue and size + self._queue[0].size <= self.batch_size:
                size += self._queue[0].size
                batch.append(self._queue.popleft())
            self._queued -= size
            self._writing = batch
            return batch

    def _write(self, batch: list[Parcel]) -> None:
        try:
            if not self._deliver(batch):
                self._next_sweep = time.monotonic()  # Mongo failed: retry with backoff
        except Exception as exc:
            message = "audit_mongo: the background writer failed to write a batch"
            log_failure(logging.ERROR, exc, message)
        finally:
            with self._condition:
                self._writing = []
                self._condition.notify_all()

    def _drain_pending(self) -> None:
        try:
            left = self._sweep()
        except Exception as exc:
            message = "audit_mongo: the background writer could not drain pending work"
            log_failure(logging.ERROR, exc, message)
            left = 1
        if left:  # Mongo still refuses: wait longer before the next try
            self._sweep_pause = min(self._sweep_pause * 2, MAX_SWEEP_PAUSE)
        else:
            self._sweep_pause = self.sweep_interval
        self._next_sweep = time.monotonic() + self._sweep_pause
