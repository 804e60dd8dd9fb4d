"""The derived vector index: one usearch HNSW index per source (MassiveDS shards).

Everything here can be rebuilt from LMDB. A checkpoint is written atomically:
each changed shard goes to a new file (temp name, fsync, rename), then a
manifest naming the files and the change-log sequence they include is written
the same way, and the folder is fsynced. Files the manifest no longer names are
removed afterwards. A crash at any point leaves either the old manifest (and
its files) or the new one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence

import msgpack
import numpy as np
from usearch.index import Index

__all__ = ["VectorIndex", "MANIFEST", "fsync_path"]

MANIFEST = "manifest.msgpack"


def fsync_path(path: str) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _shard_file(source: str, seq: int, gen: int) -> str:
    # a digest, not the name: sources can be long or hold any character; the manifest maps them
    return f"s{hashlib.sha256(source.encode()).hexdigest()[:16]}-{seq}-{gen}.usearch"


class VectorIndex:
    """usearch shards keyed by source; distances merged across shards.

    It knows which change-log entry its contents include (``applied_seq``),
    which one its last checkpoint on disk includes (``checkpoint_seq``) and
    which shards changed since (``dirty``); :class:`~.sync.IndexSync` decides
    what to apply, this class keeps its own state consistent with what it holds.
    """

    def __init__(
        self,
        directory: str,
        *,
        dim: int,
        metric: str,
        dtype: str,
        connectivity: int,
        expansion_add: int,
        expansion_search: int,
        threads: int = 0,
    ) -> None:
        self.dir = directory
        self.dim = dim
        self.metric = metric
        self.dtype = dtype
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self.threads = threads
        self.shards: dict[str, Index] = {}
        self._files: dict[str, str] = {}  # shard -> file of the last checkpoint
        self._dirty: set[str] = set()
        self._applied_seq = 0
        self._checkpoint_seq = -1

    # -- state --------------------------------------------------------------
    @property
    def applied_seq(self) -> int:
        """The last change-log entry the shards in memory include."""
        return self._applied_seq

    @property
    def checkpoint_seq(self) -> int:
        """The last change-log entry the checkpoint on disk includes (-1: none)."""
        return self._checkpoint_seq

    @property
    def needs_checkpoint(self) -> bool:
        return self._applied_seq != self._checkpoint_seq or bool(self._dirty) or not os.path.exists(self.dir)

    def applied(self, seq: int) -> None:
        """Record that everything up to change-log entry ``seq`` is in the shards."""
        self._applied_seq = seq

    # -- building ---------------------------------------------------------
    def _new_shard(self) -> Index:
        return Index(
            ndim=self.dim,
            metric=self.metric,
            dtype=self.dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    def reset(self) -> None:
        """Empty, as before a rebuild: every shard will be written at the next checkpoint."""
        self.shards = {}
        self._files = {}
        self._dirty = set()
        self._applied_seq = 0
        self._checkpoint_seq = -1

    def add(self, source: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        shard = self.shards.get(source)
        if shard is None:
            shard = self.shards[source] = self._new_shard()
        present = np.asarray(shard.contains(keys), dtype=bool) if len(shard) else np.zeros(len(keys), dtype=bool)
        if present.any():  # replaying a log entry the checkpoint already holds
            keys, vectors = keys[~present], vectors[~present]
        if len(keys):
            # One thread: usearch's parallel insertion measured to leave nodes no
            # search can reach (9 of 20K vectors; 0.05-0.23 per 100 in small
            # batches); serial insertion left none, at ~1.7x the build time on 2 cores.
            shard.add(keys, vectors, threads=1)
            self._dirty.add(source)

    def remove(self, source: str, keys: np.ndarray) -> None:
        shard = self.shards.get(source)
        if shard is None or not len(shard):
            return
        present = np.asarray(shard.contains(keys), dtype=bool)
        if present.any():
            shard.remove(keys[present])
            self._dirty.add(source)

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards.values())

    def keys(self) -> dict[str, np.ndarray]:
        return {s: np.asarray(ix.keys, dtype=np.uint64) for s, ix in self.shards.items()}

    def shard_sizes(self, sources: Iterable[str] | None = None) -> int:
        names = self.shards if sources is None else [s for s in sources if s in self.shards]
        return sum(len(self.shards[s]) for s in names)

    # -- search -----------------------------------------------------------
    def search(
        self, queries: np.ndarray, count: int, sources: Sequence[str] | None = None, expansion: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``count`` (keys, distances) per query over the chosen shards.

        Missing results are key 0 with distance +inf (chunk ids start at 1).
        """
        n = len(queries)
        names = [s for s in (self.shards if sources is None else sources) if s in self.shards]
        names = [s for s in names if len(self.shards[s])]
        all_keys, all_dist = [], []
        # a thread pool costs more than one query's search: one thread for one query
        threads = 1 if n == 1 else self.threads
        for name in names:
            shard = self.shards[name]
            ef = self.expansion_search if expansion is None else expansion
            ef = max(ef, count)
            if shard.expansion_search != ef:
                shard.expansion_search = ef  # type: ignore[misc]  # usearch has a setter; its stub says read-only
            m = shard.search(queries, min(count, len(shard)), threads=threads)
            if n == 1 and not hasattr(m, "counts"):
                keys = np.zeros((1, count), dtype=np.uint64)
                dist = np.full((1, count), np.inf, dtype=np.float32)
                keys[0, : len(m.keys)] = m.keys
                dist[0, : len(m.keys)] = m.distances
            else:
                keys = np.zeros((n, count), dtype=np.uint64)
                dist = np.full((n, count), np.inf, dtype=np.float32)
                cols = m.keys.shape[1]
                valid = np.arange(cols)[None, :] < np.asarray(m.counts)[:, None]  # type: ignore[union-attr]
                keys[:, :cols] = np.where(valid, m.keys, 0)
                dist[:, :cols] = np.where(valid, m.distances, np.inf)
            all_keys.append(keys)
            all_dist.append(dist)
        if not all_keys:
            return np.zeros((n, 0), dtype=np.uint64), np.zeros((n, 0), dtype=np.float32)
        if len(all_keys) == 1:
            return all_keys[0], all_dist[0]
        keys = np.concatenate(all_keys, axis=1)
        dist = np.concatenate(all_dist, axis=1)
        order = np.argsort(dist, axis=1, kind="stable")[:, :count]
        return np.take_along_axis(keys, order, 1), np.take_along_axis(dist, order, 1)

    # -- persistence -------------------------------------------------------
    def read_manifest(self) -> dict | None:
        try:
            with open(os.path.join(self.dir, MANIFEST), "rb") as f:
                return msgpack.unpackb(f.read(), raw=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgpack.UnpackException):
            return None  # unreadable: the caller rebuilds from LMDB

    def load_checkpoint(self) -> bool:
        """Load the last checkpoint; False if there is none usable (rebuild then)."""
        manifest = self.read_manifest()
        if not manifest or manifest.get("dim") != self.dim or manifest.get("dtype") != self.dtype:
            return False
        shards: dict[str, Index] = {}
        try:
            for source, fname in manifest["shards"].items():
                ix = self._new_shard()
                ix.load(os.path.join(self.dir, fname))
                shards[source] = ix
        except (OSError, RuntimeError, FileNotFoundError):
            return False  # a newer checkpoint replaced these files meanwhile, or damage
        self.shards = shards
        self._files = dict(manifest["shards"])
        self._dirty = set()
        self._applied_seq = self._checkpoint_seq = manifest["seq"]
        return True

    def save_checkpoint(self) -> int:
        """Write changed shards and a new manifest atomically; returns the sequence it includes."""
        os.makedirs(self.dir, exist_ok=True)
        seq = self._applied_seq
        gen = time.time_ns()  # unique file names: a reader may still be loading the previous ones
        files = {s: f for s, f in self._files.items() if s in self.shards and s not in self._dirty}
        for source in sorted(self.shards):
            if source in files:
                continue
            fname = _shard_file(source, seq, gen)
            final = os.path.join(self.dir, fname)
            tmp = final + ".tmp"
            self.shards[source].save(tmp)
            fsync_path(tmp)
            os.replace(tmp, final)
            files[source] = fname
        manifest = {"seq": seq, "dim": self.dim, "dtype": self.dtype, "metric": self.metric, "shards": files}
        tmp = os.path.join(self.dir, MANIFEST + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(manifest, use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.dir, MANIFEST))
        fsync_path(self.dir)
        self._files = files
        self._dirty = set()
        self._checkpoint_seq = seq
        self._remove_stale_files()
        return seq

    def _remove_stale_files(self) -> None:
        keep = set(self._files.values()) | {MANIFEST}
        for name in os.listdir(self.dir):
            if name not in keep:
                try:
                    os.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass

    def file_bytes(self) -> int:
        total = 0
        try:
            for name in os.listdir(self.dir):
                try:
                    total += os.path.getsize(os.path.join(self.dir, name))
                except OSError:
                    pass
        except FileNotFoundError:
            pass
        return total
