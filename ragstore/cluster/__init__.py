"""ragstore.cluster: a datastore beyond one machine, on Ray (``pip install 'ragstore[ray]'``).

A sharded store is a root folder holding ``cluster.json`` (shard count, routing rule, embedder)
and one ordinary ragstore store per shard (``shard-000`` ...). Documents are routed to a shard by
a stable hash of their id (or of their source); queries fan out to every shard and the shards'
exact top k are merged. See docs/distributed.md.

    from ragstore import cluster
    cluster.build("corpus.shards", "docs.jsonl", shards=4, embedder="minilm")
    with cluster.open("corpus.shards") as cs:
        hits = cs.query("who wrote Hamlet?", k=5)

Ray is imported only when a cluster is built or opened: importing this module needs none, and
without Ray those calls raise :class:`RayNotAvailableError`, saying how to install it.
"""

from __future__ import annotations

import os
from typing import Any

from .build import BuildProgress, BuildSummary, build, read_jsonl
from .errors import ClusterError, PartialResultWarning, RayNotAvailableError, ShardError
from .routing import ROUTES, Manifest, read_manifest, shard_of
from .sharded import ClusterCheck, ClusterStats, ShardedStore

__all__ = [
    "build",
    "open",
    "ShardedStore",
    "BuildSummary",
    "BuildProgress",
    "ClusterStats",
    "ClusterCheck",
    "Manifest",
    "ROUTES",
    "shard_of",
    "read_manifest",
    "read_jsonl",
    "ClusterError",
    "RayNotAvailableError",
    "ShardError",
    "PartialResultWarning",
]


def open(root: str | os.PathLike[str], **kwargs: Any) -> ShardedStore:  # noqa: A001 - mirrors ragstore.open
    """Open the sharded store at ``root``; see :class:`ShardedStore` for the options."""
    return ShardedStore(root, **kwargs)
