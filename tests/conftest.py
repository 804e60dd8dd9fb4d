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
