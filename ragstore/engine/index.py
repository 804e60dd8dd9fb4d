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
import warnings
from collections.abc import Iterable, Sequence

import msgpack
import numpy as np
from usearch.index import Index

from .storage import storage_error

__all__ = ["VectorIndex", "MANIFEST", "fsync_path", "file_sum", "IndexDamageWarning"]

MANIFEST = "manifest.msgpack"
SUM_ALGO = "blake2b"


class IndexDamageWarning(UserWarning):
    """An index checkpoint on disk is damaged; the index is rebuilt from LMDB instead."""


# Batches of at least this many vectors are inserted on all cores (then checked);
# smaller ones serially: a thread pool and the check cost more than they save.
PARALLEL_MIN = 512
# a node counts as reachable when the search for its own vector lists it among this many
# (exact duplicates tie with it, and Wikipedia has some)
REACH_CHECK = 10


def file_sum(path: str) -> str:
    """The digest of a file's bytes, as the manifest records it for each shard file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, SUM_ALGO).hexdigest()


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
        self.repaired = 0  # nodes re-inserted after a parallel insertion left them unreachable
        self.shards: dict[str, Index] = {}
        self._files: dict[str, str] = {}  # shard -> file of the last checkpoint
        self._dirty: set[str] = set()
        self._applied_seq = 0
        self._checkpoint_seq = -1
        self._sums: dict[str, str] = {}  # file -> digest, of the last checkpoint
        self._rejected: bytes | None = None  # the manifest last found damaged: not hashed again
        # True when a checkpoint on disk was found damaged and not used: the caller
        # saves a sound one when it may write, so the next open need not rebuild again
        self.found_damage = False

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
        return (self._applied_seq != self._checkpoint_seq or bool(self._dirty) or not os.path.exists(self.dir)
                # a checkpoint of ragstore 0.1 has no digests: the next one records them
                or any(f not in self._sums for f in self._files.values()))

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
        self._sums = {}

    def add(self, source: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        shard = self.shards.get(source)
        if shard is None:
            shard = self.shards[source] = self._new_shard()
        present = np.asarray(shard.contains(keys), dtype=bool) if len(shard) else np.zeros(len(keys), dtype=bool)
        if present.any():  # replaying a log entry the checkpoint already holds
            keys, vectors = keys[~present], vectors[~present]
        if not len(keys):
            return
        self._dirty.add(source)
        if len(keys) < PARALLEL_MIN or self.threads == 1:
            shard.add(keys, vectors, threads=1)
            return
        # On all cores, then repaired: usearch's parallel insertion was measured to leave
        # nodes that no search reaches (9 of 20K vectors), serial insertion none. Each
        # added vector is searched for; the few its own search misses are inserted again,
        # one thread, which links them into the graph as a serial build would.
        shard.add(keys, vectors, threads=self.threads)
        self.repaired += self._reinsert_unreachable(shard, keys, vectors)

    def _reinsert_unreachable(self, shard: Index, keys: np.ndarray, vectors: np.ndarray) -> int:
        repaired = 0
        for _ in range(3):  # a re-inserted node is found at once in practice; bounded all the same
            count = min(REACH_CHECK, len(shard))
            m = shard.search(vectors, count, threads=self.threads)
            found = (np.asarray(m.keys).reshape(len(keys), -1) == keys[:, None]).any(axis=1)
            if found.all():
                break
            keys, vectors = keys[~found], vectors[~found]
            shard.remove(keys)
            shard.add(keys, vectors, threads=1)
            repaired += len(keys)
        return repaired

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

    def self_recall(self, source: str, keys: np.ndarray, vectors: np.ndarray) -> float:
        """The share of ``keys`` that a search of the shard for their own stored vectors finds.

        A sound HNSW graph finds nearly every vector itself; a damaged one (links
        pointing at wrong nodes) loses many. Near-duplicates can push a key out of
        a short list, so each search looks at up to 32 results.
        """
        shard = self.shards.get(source)
        if shard is None or not len(shard) or not len(keys):
            return 1.0
        count = min(32, len(shard))
        m = shard.search(vectors, count, threads=1)
        found = np.asarray(m.keys).reshape(len(keys), -1)
        return float(np.mean([k in row for k, row in zip(keys.tolist(), found.tolist(), strict=True)]))

    # -- persistence -------------------------------------------------------
    def _read_manifest_bytes(self) -> bytes | None:
        try:
            with open(os.path.join(self.dir, MANIFEST), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return b""  # unreadable: treated as damaged

    def read_manifest(self) -> dict | None:
        raw = self._read_manifest_bytes()
        return None if raw is None else _parse_manifest(raw)

    def verify_files(self, manifest: dict | None = None) -> list[str]:
        """What is wrong with the checkpoint on disk: an unreadable manifest, shard files
        missing or whose bytes differ from the digest the manifest recorded.

        A manifest written before checksums were recorded (ragstore 0.1) has no
        digests: its files are only checked to exist.
        """
        if manifest is not None:
            return self._verify(manifest)
        out: list[str] = []
        for _ in range(3):
            raw = self._read_manifest_bytes()
            if raw is None:
                return []
            out = self._verify(_parse_manifest(raw))
            if not out or self._read_manifest_bytes() == raw:
                return out
            # another process saved a newer checkpoint meanwhile (and removed the files of
            # this one): not damage, verify the new one
        return out

    def _verify(self, manifest: dict | None) -> list[str]:
        if manifest is None:
            return [f"index manifest {os.path.join(self.dir, MANIFEST)} is unreadable"]
        out = []
        sums = manifest.get("sums") or {}
        for source, fname in manifest["shards"].items():
            label = source or "(no source)"
            path = os.path.join(self.dir, fname)
            try:
                got = file_sum(path) if fname in sums else None
            except OSError as e:
                out.append(f"index shard {label!r}: file {fname} cannot be read ({e.strerror or e})")
                continue
            if got is not None and got != sums[fname]:
                out.append(f"index shard {label!r}: file {fname} is damaged (its {SUM_ALGO} digest differs "
                           "from the one recorded when it was saved)")
        return out

    def load_checkpoint(self) -> bool:
        """Load the last checkpoint; False if there is none usable (rebuild then).

        Every shard file is verified against its digest in the manifest before
        usearch reads it: usearch trusts its files, and a damaged one crashed
        the process (SIGSEGV, SIGBUS) at the first search.
        """
        raw = self._read_manifest_bytes()
        if raw is None:
            return False
        if raw == self._rejected:
            return False  # found damaged already: rebuilt from LMDB, no need to hash and warn again
        manifest = _parse_manifest(raw)
        if not manifest or manifest.get("dim") != self.dim or manifest.get("dtype") != self.dtype:
            return self._reject(raw, None if manifest else "its manifest is unreadable")
        damage = self.verify_files(manifest)
        if damage:
            if self._read_manifest_bytes() != raw:
                return False  # a newer checkpoint replaced these files meanwhile: not damage
            return self._reject(raw, "; ".join(damage))
        shards: dict[str, Index] = {}
        try:
            for source, fname in manifest["shards"].items():
                ix = self._new_shard()
                ix.load(os.path.join(self.dir, fname))
                shards[source] = ix
        except FileNotFoundError:
            return False  # a newer checkpoint replaced these files meanwhile
        except (OSError, RuntimeError, ValueError) as e:
            return self._reject(raw, f"usearch cannot load it ({e})")
        self.shards = shards
        self._files = dict(manifest["shards"])
        self._sums = dict(manifest.get("sums") or {})
        self._dirty = set()
        self._applied_seq = self._checkpoint_seq = manifest["seq"]
        return True

    def _reject(self, raw: bytes, why: str | None) -> bool:
        self._rejected = raw
        self.found_damage = True
        if why is not None:  # None: another dimension or dtype, not damage
            warnings.warn(f"the vector index checkpoint in {self.dir} is damaged: {why}. The index is "
                          "rebuilt from the records (nothing is lost); `ragstore check --fix` saves a "
                          "sound checkpoint", IndexDamageWarning, stacklevel=3)
        return False

    def save_checkpoint(self) -> int:
        """Write changed shards and a new manifest atomically; returns the sequence it includes.

        A failure to write (a full disk, usearch's "Failed to serialize into
        stream") leaves the previous checkpoint as it was, removes what this
        attempt wrote (giving the space back) and raises a StorageError.
        """
        created: list[str] = []
        try:
            return self._save_checkpoint(created)
        except (OSError, RuntimeError) as e:
            for f in created:  # not named by any manifest: the previous checkpoint stands
                try:
                    os.unlink(f)
                except OSError:
                    pass
            err = storage_error(e, self.dir, "saving the index checkpoint",
                                lost="the checkpoint was not saved; nothing is lost (the index is rebuilt or "
                                "replayed from the records at the next open)")
            if err is None:
                raise
            raise err from None

    def _save_checkpoint(self, created: list[str]) -> int:
        os.makedirs(self.dir, exist_ok=True)
        seq = self._applied_seq
        gen = time.time_ns()  # unique file names: a reader may still be loading the previous ones
        files = {s: f for s, f in self._files.items() if s in self.shards and s not in self._dirty}
        sums = {f: self._sums[f] for f in files.values() if f in self._sums}
        for source in sorted(self.shards):
            if source in files and files[source] in sums:
                continue
            fname = _shard_file(source, seq, gen)
            final = os.path.join(self.dir, fname)
            tmp = final + ".tmp"
            created += [tmp, final]
            self.shards[source].save(tmp)
            fsync_path(tmp)
            # read back from the file: the digest is of the bytes a later load will read
            sums[fname] = file_sum(tmp)
            os.replace(tmp, final)
            files[source] = fname
        manifest = {"seq": seq, "dim": self.dim, "dtype": self.dtype, "metric": self.metric, "shards": files,
                    "sums": sums, "sum": SUM_ALGO}
        tmp = os.path.join(self.dir, MANIFEST + ".tmp")
        created.append(tmp)
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(manifest, use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.dir, MANIFEST))
        created.clear()  # the new manifest names them now: never removed as leftovers
        fsync_path(self.dir)
        self._files = files
        self._sums = sums
        self._dirty = set()
        self._checkpoint_seq = seq
        self._rejected = None
        self.found_damage = False
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


def _parse_manifest(raw: bytes) -> dict | None:
    """The manifest's fields, or None if its bytes are not a manifest (damage: rebuild)."""
    try:
        m = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(m, dict) or not isinstance(m.get("shards"), dict) or not isinstance(m.get("seq"), int):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in m["shards"].items()):
        return None
    sums = m.get("sums")
    if sums is not None and not isinstance(sums, dict):
        return None
    return m
