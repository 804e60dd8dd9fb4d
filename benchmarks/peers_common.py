"""What every peer adapter of bench_peers.py shares: the data, the interface, file helpers.

:class:`Data` is the benchmark's vectors and texts as a data folder holds
them; :class:`System` is the interface each adapter implements (see
peers.py's docstring); the HNSW build settings every HNSW system gets are
here so that all are built alike. The adapters live in peers_ragstore.py,
peers_ann.py (index libraries) and peers_db.py (databases).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

__all__ = [
    "HNSW_M",
    "HNSW_EF_CONSTRUCTION",
    "EF_SWEEP",
    "Data",
    "System",
    "fsync_tree",
    "disk_bytes",
    "remove",
]

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
EF_SWEEP = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]


# --------------------------------------------------------------------------- data
@dataclass
class Data:
    X: np.ndarray  # (n, d) float32, unit rows
    chunk_doc: np.ndarray  # (n,) document index of each chunk
    positions: np.ndarray  # (n,) chunk position in its document
    doc_start: np.ndarray  # (n_docs + 1,) first row of each document
    doc_ids: list[str]
    folder: str

    _texts: list[str] | None = None
    _doc_texts: list[str] | None = None

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            with open(os.path.join(self.folder, "chunk_texts.json"), encoding="utf-8") as f:
                self._texts = json.load(f)
        return self._texts

    @property
    def doc_texts(self) -> list[str]:
        if self._doc_texts is None:
            with open(os.path.join(self.folder, "doc_texts.json"), encoding="utf-8") as f:
                self._doc_texts = json.load(f)
        return self._doc_texts

    @classmethod
    def load(cls, folder: str) -> Data:
        X = np.load(os.path.join(folder, "X.npy"), mmap_mode=None)
        chunk_doc = np.load(os.path.join(folder, "chunk_doc.npy"))
        positions = np.load(os.path.join(folder, "positions.npy"))
        with open(os.path.join(folder, "doc_ids.json"), encoding="utf-8") as f:
            doc_ids = json.load(f)
        doc_start = np.searchsorted(chunk_doc, np.arange(len(doc_ids) + 1)).astype(np.int64)
        return cls(X, chunk_doc, positions, doc_start, doc_ids, folder)


def fsync_tree(path: str) -> None:
    """fsync every file and folder under path (durability for systems without their own)."""
    paths = [path] if os.path.isfile(path) else []
    if os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            paths += [os.path.join(root, f) for f in files]
            paths += [root]
    else:
        paths.append(os.path.dirname(path) or ".")
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def disk_bytes(path: str) -> int:
    """Bytes allocated on disk under path (like du)."""
    total = 0
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def _rows(arr: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(arr), k), -1, dtype=np.int64)
    out[:, : arr.shape[1]] = arr[:, :k]
    return out


# --------------------------------------------------------------------------- base
class System:
    name = ""
    label = ""
    family = ""
    durable = ""  # what the timed ingest includes
    stores_text = False
    max_queries: int | None = None  # slow systems: only this many queries are timed
    can_delete = True
    reload_to_prepare = False  # the search parameter is persisted: set it before a timed open
    reclaim_how = "n/a"
    variants: dict[str, list] = {}
    param_name = ""
    primary_variant = ""

    def __init__(self, threads: int = 0):
        self.threads = threads

    def versions(self) -> dict[str, str]:
        return {}

    def path_in(self, folder: str) -> str:
        return os.path.join(folder, self.name)

    def build(self, path: str, data: Data) -> dict:
        raise NotImplementedError

    def open(self, path: str, data: Data | None = None) -> None:
        raise NotImplementedError

    def search_batch(self, Q: np.ndarray, k: int, variant: str, p) -> np.ndarray:
        raise NotImplementedError

    def search_one(self, q: np.ndarray, k: int, variant: str, p) -> list[int]:
        raise NotImplementedError

    def prepare(self, variant: str, p) -> None:
        """Set the search parameter before timing (for systems where it is a setting)."""

    def delete(self, rows: np.ndarray, docs: np.ndarray, data: Data) -> None:
        raise NotImplementedError

    def reclaim(self) -> bool:
        return False

    def single_thread(self) -> None:
        pass

    def all_threads(self) -> None:
        pass

    def close(self) -> None:
        pass


def _ver(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)
