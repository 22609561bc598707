"""How ``revmux serve`` runs its replicas, checked before Ray starts (no Ray import here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from revmux.serve.batching import REMAINDER
from revmux.serve.protocol import Limits

BATCHES_PER_N = 32  # default max_batch_size: 32 composites (MiniLM at saturation: 1.19x with 64, 1.09-1.17x with 16)
ONGOING_PER_BATCH = 8  # default max_ongoing_requests: 8 batches


@dataclass(frozen=True)
class ServerOptions:
    """One deployment's settings (``revmux serve --help`` explains each; docs/serving.md how to choose them).

    Raises:
        ValueError: for a non-positive size, count or time, a batch size that is not a multiple of N, a per-replica
            request cap below the batch size (batches could never fill), or an unknown remainder mode.
    """

    compose_size: int = 1  # N of the served adapter (1: the un-multiplexed baseline)
    max_batch_size: int | None = None  # requests per forward; default 32 * N
    batch_wait_timeout_s: float = 0.005  # how long the first request of a batch waits for more
    num_replicas: int = 1
    num_cpus: float = 1.0  # Ray CPUs reserved per replica
    threads: int | None = None  # torch threads per replica; default: num_cpus, at least 1
    # per replica; default 8 * max_batch_size: requests beyond it wait in Ray's router, which retries with back-off
    # (MiniLM, 128 clients at 2 * max_batch_size: 10 requests/s, p50 12 s; docs/serving.md)
    max_ongoing_requests: int | None = None
    # per proxy, beyond the replicas' caps; then a fast 503 with Retry-After. Default 2 * max_batch_size: what waits
    # here is retried by Ray's router with back-off, so a long queue here idles the replica (docs/serving.md)
    max_queued_requests: int | None = None
    retry_after_s: int = 1
    graceful_shutdown_timeout_s: float = 20.0  # in-flight requests drain this long on shutdown
    remainder: str = "frozen"  # how a batch's last r < N requests are served (revmux.serve.batching)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if self.max_batch_size is None:
            object.__setattr__(self, "max_batch_size", BATCHES_PER_N * self.compose_size)
        if self.threads is None:
            object.__setattr__(self, "threads", max(1, int(self.num_cpus)))
        if self.max_queued_requests is None:
            object.__setattr__(self, "max_queued_requests", 2 * self.max_batch_size)
        if self.max_ongoing_requests is None:
            object.__setattr__(self, "max_ongoing_requests", ONGOING_PER_BATCH * self.max_batch_size)
        for name in ("compose_size", "max_batch_size", "num_replicas", "threads", "max_ongoing_requests",
                     "max_queued_requests", "retry_after_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("batch_wait_timeout_s", "graceful_shutdown_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}.")
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus must be > 0 (Ray CPUs per replica), got {self.num_cpus!r}.")
        if self.max_batch_size % self.compose_size:
            raise ValueError(f"max_batch_size {self.max_batch_size} is not a multiple of the adapter's N = "
                             f"{self.compose_size}, so every full batch would end in a partial composite; use a "
                             f"multiple, e.g. {BATCHES_PER_N * self.compose_size}.")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"max_ongoing_requests {self.max_ongoing_requests} is below max_batch_size "
                             f"{self.max_batch_size}: a replica would never hold a full batch. Raise it to at least "
                             f"{self.max_batch_size} (default {ONGOING_PER_BATCH} * max_batch_size).")
        if self.remainder not in REMAINDER:
            raise ValueError(f"remainder must be one of {', '.join(REMAINDER)}, got {self.remainder!r}.")
