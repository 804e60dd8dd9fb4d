import os

# Before numpy loads (see cli/__init__.py): single-threaded BLAS with MiniLM's
# per-core workers keeps the suite fast on a busy 2-core machine.
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
