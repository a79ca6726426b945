"""What one child process does: one workload under one configuration, once, timed and
measured here (never in the parent), the figures returned as a JSON-ready dict."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import memory
from benchmarks.configurations import BY_SLUG
from benchmarks.environment import source_digest
from benchmarks.sinks import open_sink
from benchmarks.workloads import WORKLOADS, Sizes


class Meter:
    """Times the block a workload runs it around and measures its memory: resident memory
    just before (VmRSS), and the peak (``ru_maxrss``, whose high-water mark is reset just
    before the block where Linux allows it). With ``profile``, the block runs under
    pyinstrument and its text report is written there."""

    def __init__(self, profile: Path | None = None) -> None:
        self.profile = profile
        self.profiler: Any = None
        self.seconds = 0.0
        self.before_mib: float | None = None
        self.peak_mib = 0.0
        self.peak_reset = False

    def __enter__(self) -> None:
        gc.collect()
        self.peak_reset = memory.reset_peak()
        self.before_mib = memory.current_mib()
        if self.profile is not None:
            from pyinstrument import Profiler

            self.profiler = Profiler()
            self.profiler.start()
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.peak_mib = memory.peak_mib()
        if self.profiler is not None and self.profile is not None:
            self.profiler.stop()
            self.profile.parent.mkdir(parents=True, exist_ok=True)
            self.profile.write_text(self.profiler.output_text(unicode=True, show_all=False))

    def growth_mib(self) -> float | None:
        """Peak minus the memory before; never below 0 (the kernel's counters are
        approximate by a few pages, so a block that allocates nothing can read -0.2)."""
        return None if self.before_mib is None else max(self.peak_mib - self.before_mib, 0.0)


def run_one(
    workload: str, configuration: str, sizes: Sizes, sink_kind: str, profile: Path | None
) -> dict[str, Any]:
    """Run ``workload`` under ``configuration`` (a slug) in this process."""
    source = source_digest()  # before the configuration imports audit_mongo
    sink = open_sink(sink_kind)
    auditing = BY_SLUG[configuration].create(sink)
    meter = Meter(profile)
    try:
        with tempfile.TemporaryDirectory(prefix="audit-mongo-bench-") as directory:
            records = WORKLOADS[workload].run(auditing, sizes, Path(directory), meter)
    finally:
        sink.close()
    return {
        "seconds": meter.seconds,
        "records": records.count,
        "note": records.note,
        "sink": auditing.sink_label,
        "peak_mib": meter.peak_mib,
        "growth_mib": meter.growth_mib(),
        "peak_reset": meter.peak_reset,
        "source": source,
    }
