"""The int8 all-MiniLM-L6-v2 on onnxruntime ("minilm-int8", ragstore/embedders/onnx.py).

The graph is built from the same weights as the numpy encoder; the float32
graph must match the numpy encoder, the int8 one stay close to it. Models are
built once per module into a temporary cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx  # noqa: F401 - core dependencies: a missing one is a broken install, not a skip
import onnxruntime  # noqa: F401
import pytest

import ragstore  # noqa: E402
from ragstore.embedders import onnx as ox  # noqa: E402
from ragstore.embedders import resolve  # noqa: E402
from ragstore.embedders.minilm import MiniLM  # noqa: E402
from ragstore.engine.chunking import Chunker  # noqa: E402
from ragstore.errors import ConfigMismatchError, EmbedderNotAvailableError, InvalidInputError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import wiki_docs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # every resolve("minilm-int8") of this module builds into (and reuses) one temporary folder
    folder = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGSTORE_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def ref():
    try:
        return MiniLM()
    except EmbedderNotAvailableError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def int8(cache, ref):
    return resolve("minilm-int8")


@pytest.fixture(scope="module")
def chunks(ref):
    """~50 real 64-token chunks cut by ragstore's own chunker, plus odd texts."""
    chunker = Chunker(ref.tokenizer_json(), 64)
    docs = [d["text"] for d in wiki_docs(12)]
    texts = [c.text for doc in chunker.chunk_many(docs) for c in doc.chunks]
    return texts[:: max(1, len(texts) // 50)][:50]


ODD = ["hello", "Zürich and 東京 😀", " ".join(["long text"] * 300), "x"]


def test_fp32_graph_matches_numpy(ref, cache, chunks):
    m = ox.MiniLMInt8(int8=False, cache=cache)
    texts = chunks[:8] + ODD
    a, b = ref.encode(texts), m.encode(texts)
    cos = np.einsum("ij,ij->i", a, b)
    assert cos.min() > 0.9999, cos
    assert b.dtype == np.float32 and b.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def test_int8_close_to_numpy(ref, int8, chunks):
    texts = chunks + ODD
    cos = np.einsum("ij,ij->i", ref.encode(texts), int8.encode(texts))
    print(f"\nint8 vs numpy over {len(texts)} texts: mean {cos.mean():.5f} min {cos.min():.5f}")
    assert cos[: len(chunks)].mean() >= 0.99
    assert cos.min() > 0.95


def test_same_tokens_as_numpy(ref, int8, chunks):
    texts = chunks[:10] + ODD
    assert [e.ids for e in int8._tok.encode_batch(texts)] == [e.ids for e in ref._w.tokenizer.encode_batch(texts)]
    assert int8.max_seq_length == ref.max_seq_length == 256
    assert int8.tokenizer_json() == ref.tokenizer_json()


def test_order_and_batching(int8, chunks):
    texts = ODD + chunks[:20]
    whole = int8.encode(texts)
    one_by_one = np.stack([int8.encode([t])[0] for t in texts[:8]])
    # Each in its place, and the same vector alone as in a batch: activations are quantized
    # per token row, so a text's vector does not depend on its batch companions (with
    # onnxruntime's per-batch dynamic quantization it moved by up to 0.04 for a short text)
    cos = np.einsum("ij,ij->i", whole[:8], one_by_one)
    assert cos.min() > 0.99999, cos
    assert int8.encode([]).shape == (0, 384)
    with pytest.raises(InvalidInputError):
        int8.encode("a string")
    with pytest.raises(InvalidInputError):
        int8.encode(["ok", 3])  # type: ignore[list-item]


def test_identity(ref, int8):
    assert int8.name == "minilm-int8" and int8.dim == 384 and int8.normalized
    assert int8.fingerprint != ref.fingerprint
    assert "minilm-int8" in ragstore.embedders.available()


def test_store_with_int8_reopens_and_queries(tmp_path, int8, chunks):
    path = tmp_path / "s"
    docs = [d["text"] for d in wiki_docs(3)]
    with ragstore.open(path, embedder="minilm-int8") as s:
        for i, t in enumerate(docs):
            s.add(f"d{i}", t)
    with ragstore.open(path) as s:  # reopened with its own embedder, from the recorded spec
        assert s.embedder.name == "minilm-int8"
        probe = s.chunk(docs[1])[0].text
        hits = s.query(probe, 3)
        assert hits[0].doc_id == "d1" and hits[0].text == probe
    with pytest.raises(ConfigMismatchError):
        ragstore.open(path, embedder="minilm")


def test_minilm_store_refuses_int8(tmp_path, ref, int8):
    path = tmp_path / "s"
    docs = [d["text"] for d in wiki_docs(2)]
    with ragstore.open(path, embedder=ref) as s:
        s.add("d0", docs[0])
    with pytest.raises(ConfigMismatchError):
        ragstore.open(path, embedder="minilm-int8")
    with ragstore.open(path) as s:  # still its own embedder
        assert s.embedder.name == "minilm"
        assert s.query(docs[0][:200], 1)[0].doc_id == "d0"


def test_damaged_cache_is_rebuilt(tmp_path, int8, chunks):
    cache = tmp_path / "c"
    cache.mkdir()
    f = cache / int8.model_file.name
    good = int8.model_file.read_bytes()
    want = int8.encode(chunks[:4])
    # truncated (a crash mid-copy, a full disk): rebuilt, never loaded
    ox._SESSIONS.clear()  # as a new process would: nothing in memory
    f.write_bytes(good[: len(good) // 2])
    m = ox.MiniLMInt8(cache=cache)
    assert m.model_file == f
    assert f.read_bytes() == good  # rebuilt, byte for byte
    np.testing.assert_allclose(m.encode(chunks[:4]), want, atol=1e-6)
    # other damage is refused by the same check (each rebuild costs seconds, so not rebuilt here)
    assert ox._read_cached(f) is not None and ox._read_cached(cache / "missing.onnx") is None
    for damage in (b"", good[:10], good[:-1] + bytes([good[-1] ^ 1]), b"x" + good[1:]):
        f.write_bytes(damage)
        assert ox._read_cached(f) is None
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("RAGSTORE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ox.cache_dir() == tmp_path / "ragstore" / "onnx"
    monkeypatch.setenv("RAGSTORE_CACHE_DIR", str(tmp_path / "r"))
    assert ox.cache_dir() == tmp_path / "r" / "onnx"


def test_clear_error_without_onnxruntime():
    # a fresh interpreter where onnxruntime cannot be imported: the error says what to install
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from ragstore.embedders import resolve\n"
        "from ragstore.errors import EmbedderNotAvailableError\n"
        "try:\n    resolve('minilm-int8')\nexcept EmbedderNotAvailableError as e:\n    print(e)\n"
        "import ragstore; print('minilm-int8' == ragstore.embedders.DEFAULT_EMBEDDER)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "pip install onnx onnxruntime" in out.stdout and "True" in out.stdout
    # and importing ragstore never imports onnxruntime or onnx (only resolving minilm-int8 does)
    code = "import sys, ragstore, ragstore.embedders; print(sorted({'onnx', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)
