"""Where a document lives: a stable hash of its id (or of its source) picks its shard; the
manifest (``cluster.json`` in the root folder) records the shard count and the rule.

The hash is BLAKE2b of the UTF-8 bytes, not Python's ``hash()`` (salted per process), so every
process, node and run routes a document to the same shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigMismatchError, InvalidInputError, NotFoundError

__all__ = ["ROUTES", "MANIFEST", "Manifest", "shard_of", "shard_path", "read_manifest", "write_manifest",
           "global_chunk_id", "local_chunk_id"]

ROUTES = ("id", "source")
MANIFEST = "cluster.json"
MANIFEST_VERSION = 1


def shard_of(key: str, shards: int) -> int:
    """The shard (0 .. shards-1) of a document id or source name: stable across processes and runs."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def shard_path(root: str, shard: int) -> str:
    return os.path.join(root, f"shard-{shard:03d}")


def global_chunk_id(local: int, shard: int, shards: int) -> int:
    """A chunk id unique in the cluster: the shard store's id times the shard count plus the shard."""
    return local * shards + shard


def local_chunk_id(chunk_id: int, shards: int) -> tuple[int, int]:
    """(shard, the shard store's chunk id) of a cluster chunk id."""
    return chunk_id % shards, chunk_id // shards


@dataclass(frozen=True)
class Manifest:
    shards: int
    route: str
    embedder: str  # the embedder's name (a spec string when it has one)
    store_options: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def key_of(self, doc_id: str, source: str | None) -> str:
        return doc_id if self.route == "id" else (source or "")

    def shard(self, doc_id: str, source: str | None = None) -> int:
        return shard_of(self.key_of(doc_id, source), self.shards)


def check_layout(shards: Any, route: Any) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 4096:
        raise InvalidInputError(f"shards must be an integer in 1..4096, got {shards!r}")
    if route not in ROUTES:
        raise InvalidInputError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")


def read_manifest(root: str) -> Manifest | None:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigMismatchError(f"cannot read the cluster manifest {path}: {e}") from None
    if raw.get("version", 0) > MANIFEST_VERSION:
        raise ConfigMismatchError(f"{path} has version {raw['version']}, newer than this ragstore; upgrade it")
    return Manifest(**raw)


def open_manifest(root: str) -> Manifest:
    m = read_manifest(root)
    if m is None:
        raise NotFoundError(f"{root} holds no sharded store ({MANIFEST} is missing); make one with "
                            "ragstore.cluster.build()")
    return m


def write_manifest(root: str, m: Manifest) -> None:
    """Atomically (a rename): a crash leaves the old manifest or the new one."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(m), f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
