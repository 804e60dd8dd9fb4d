import os

# Before numpy loads: the suite runs many processes at once, and threaded BLAS
# collapses when cores are oversubscribed (3-8x slower measured); one BLAS
# thread per process with MiniLM's per-core workers keeps it steady.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import HashEmbedder  # noqa: E402


@pytest.fixture
def emb():
    return HashEmbedder()


@pytest.fixture
def store(tmp_path, emb):
    import ragstore

    s = ragstore.open(tmp_path / "s", embedder=emb, chunk_tokens=16)
    yield s
    s.close()
