"""Resident memory of the current (child) process, read from Linux's /proc and getrusage.

The high-water mark can be reset just before the timed part (``/proc/self/clear_refs``,
Linux 4.0+), so that the peak reported is the timed part's, not the setup's (inserting
100,000 rows allocates too). Where that is not allowed, the peak is the process's.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK = "5"  # clear_refs: reset the peak resident set size (VmHWM)
KIB = 1024


def current_mib() -> float | None:
    """VmRSS in MiB, or None where /proc is not available."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / KIB
    return None


def reset_peak() -> bool:
    """Make the peak resident set size start again from now; False if not allowed."""
    try:
        CLEAR_REFS.write_text(RESET_PEAK)
    except OSError:
        return False
    return True


def peak_mib() -> float:
    """``ru_maxrss`` of this process in MiB (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (KIB * KIB) if sys.platform == "darwin" else peak / KIB
