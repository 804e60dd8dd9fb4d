"""Ray itself: connecting, actor options, and calls that survive an actor's restart.

Every shard actor is started with ``max_restarts=-1`` (Ray restarts it, on another node if
its own is gone, and its ``__init__`` reopens the shard store from disk) and
``max_task_retries=0``: a call in flight when the actor died fails here, where
:func:`gather` retries it, raises a :class:`ShardError` naming the shard, or leaves the
shard out, as the caller chose (``on_shard_error``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InvalidInputError
from .errors import ShardError, require_ray

__all__ = ["ON_SHARD_ERROR", "connect", "actor_options", "gather", "shard_error", "check_on_error", "kill_all"]

ON_SHARD_ERROR = ("retry", "raise", "partial")


def check_on_error(mode: Any) -> str:
    if mode not in ON_SHARD_ERROR:
        raise InvalidInputError(f"on_shard_error must be one of {', '.join(ON_SHARD_ERROR)}, got {mode!r}")
    return str(mode)


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` if given, else to the running cluster that
    ``ray.init()`` finds (a local one is started when there is none)."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    return ray


def actor_options(extra: dict[str, Any] | None = None, *, num_cpus: float = 0) -> dict[str, Any]:
    """Restartable actors spread over the nodes; ``extra`` (e.g. resources) overrides."""
    opts: dict[str, Any] = dict(max_restarts=-1, max_task_retries=0, num_cpus=num_cpus, scheduling_strategy="SPREAD")
    opts.update(extra or {})
    return opts


def gather(
    calls: dict[int, Callable[[int], Any]],
    *,
    mode: str,
    timeout: float,
    on_retry: Callable[[int], None] | None = None,
    refs: dict[int, Any] | None = None,
) -> tuple[dict[int, Any], dict[int, BaseException]]:
    """Run ``calls[shard](attempt) -> ObjectRef`` on every shard at once; (results, failures).

    A shard whose actor died (``RayActorError``: killed, its node lost) is called again with
    ``mode="retry"`` (attempt 1, 2 ... a replica, or the restarted actor) until ``timeout``
    seconds have passed; the failures left are returned for the caller to raise
    (:func:`shard_error`) or report. Errors raised by the shard store itself (bad input ...)
    are raised as they are.
    """
    ray = require_ray()
    from ray.exceptions import GetTimeoutError, RayActorError

    if refs is None:  # (else the first attempts were submitted by the caller)
        refs = {s: make(0) for s, make in calls.items()}
    results: dict[int, Any] = {}
    failed: dict[int, BaseException] = {}
    deadline = time.monotonic() + timeout
    for s, ref in refs.items():
        try:
            results[s] = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
        except (RayActorError, GetTimeoutError) as e:
            failed[s] = e
    if failed and mode == "retry":
        for s in sorted(failed):
            attempt = 0
            while time.monotonic() < deadline:
                attempt += 1
                if on_retry is not None:
                    on_retry(s)
                time.sleep(min(0.1 * 2 ** attempt, 2.0))
                try:
                    results[s] = ray.get(calls[s](attempt), timeout=max(1.0, deadline - time.monotonic()))
                    del failed[s]
                    break
                except (RayActorError, GetTimeoutError) as e:
                    failed[s] = e
    return results, failed


def shard_error(failed: dict[int, BaseException], what: str, mode: str, timeout: float,
                hits: Any = None) -> ShardError:
    names = ", ".join(f"shard {s} ({type(e).__name__})" for s, e in sorted(failed.items()))
    tried = f"retried for {timeout:.0f}s" if mode == "retry" else "not retried (on_shard_error='raise')"
    first = next(iter(failed.values()))
    return ShardError(
        f"{what}: {names} did not answer: its actor died (killed, or its node was lost) and was {tried}. "
        f"The other shards answered (their merged hits are in .hits); pass on_shard_error='retry' to wait "
        f"for the restart, or 'partial' to accept their answer. First cause: {str(first)[:300]}",
        shards=sorted(failed), hits=hits,
    )


def kill_all(handles: Iterable[Any], *, close: bool = True, timeout: float = 30.0) -> None:
    """Close each actor's store (``close()``: its index saved), then end the actors."""
    ray = require_ray()
    handles = list(handles)
    if close:
        refs = [h.close.remote() for h in handles]
        try:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception:
            pass
    for h in handles:
        try:
            ray.kill(h, no_restart=True)
        except Exception:
            pass
