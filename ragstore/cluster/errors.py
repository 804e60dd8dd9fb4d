"""The cluster's errors: each derives from :class:`ragstore.RagstoreError` and names what failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import RagstoreError

__all__ = ["ClusterError", "RayNotAvailableError", "ShardError", "PartialResultWarning", "require_ray"]


class ClusterError(RagstoreError):
    """A sharded store's failure that is not one shard store's own error."""


class RayNotAvailableError(ClusterError):
    """``ragstore.cluster`` needs Ray: ``pip install 'ragstore[ray]'``."""


class ShardError(ClusterError):
    """A shard's actor died (its node was lost, it was killed) and the call was not retried, or
    retries ran out. ``shards`` names the failed shards; ``hits`` holds what the other shards
    answered (the merged partial result of a query, else None)."""

    def __init__(self, message: str, *, shards: Sequence[int], hits: Any = None) -> None:
        super().__init__(message)
        self.shards = tuple(shards)
        self.hits = hits


class PartialResultWarning(UserWarning):
    """A query with ``on_shard_error="partial"`` answered without the shards named in the message."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`RayNotAvailableError` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise RayNotAvailableError(
            f"ragstore.cluster runs on Ray, which is not installed ({e}): install it with "
            "`pip install 'ragstore[ray]'` (or `pip install 'ray>=2.9'`); a single-machine store "
            "needs no Ray: use ragstore.open()"
        ) from None
    return ray
