"""A ``torch.profiler`` session that prints nothing of its own.

Starting and stopping the profiler makes kineto write ``USDT: ... profiler_start`` / ``profiler_stop`` lines to the
process's stderr, and with memory profiling c10 warns "Memory block of unknown size was allocated before the
profiling started" from C++; no setting turns these off (``KINETO_LOG_LEVEL`` does not). ``quiet_profile`` points file
descriptor 2 at a temporary file while the session lasts and afterwards passes every other line on to stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

import torch
from torch.profiler import ProfilerActivity, profile

_PROFILER_NOISE = re.compile(r"^USDT:.*(profiler_start|profiler_stop)|Memory block of unknown size was allocated")


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Hold back what is written to file descriptor 2 inside the block; afterwards write it, less profiler noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded interpreter, closed stream)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _PROFILER_NOISE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


@contextlib.contextmanager
def quiet_profile(device: torch.device, **options) -> Iterator[profile]:
    """A running ``torch.profiler.profile`` (CPU activity, plus CUDA on a CUDA device) for the block, yielded; read
    its events after the block. ``options`` go to ``profile`` (e.g. ``profile_memory=True``)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _filtered_stderr(), profile(activities=activities, **options) as prof:
        yield prof
