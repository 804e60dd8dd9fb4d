"""Embedders: what turns chunk text into vectors.

A store records the embedder that made it (name, dimension, fingerprint of the
weights) and refuses to mix: vectors from two models are not comparable.

An embedder is any object with this shape (see :class:`Embedder`):

- ``name``: a spec string that :func:`resolve` turns back into the embedder
  (``"minilm"``, ``"sentence-transformers:NAME"``, ``"onnx:PATH"`` ...);
- ``dim``: the vector dimension;
- ``fingerprint``: a short hex digest identifying the weights;
- ``normalized``: whether ``encode`` returns unit-length vectors;
- ``encode(texts) -> float32 array (len(texts), dim)``;
- ``tokenizer_json()``: the serialized tokenizer.json to chunk with by default,
  or None.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import EmbedderNotAvailableError, InvalidInputError

__all__ = [
    "Embedder",
    "CallableEmbedder",
    "Precomputed",
    "register",
    "unregister",
    "resolve",
    "available",
    "DEFAULT_EMBEDDER",
    "SentenceTransformerEmbedder",
    "OnnxEmbedder",
]

# int8 all-MiniLM-L6-v2 on onnxruntime: 2-3x the numpy float32 encoder's speed at the same retrieval
# quality (docs/embedders.md); "minilm" stays the float32 reference
DEFAULT_EMBEDDER = "minilm-int8"


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    fingerprint: str
    normalized: bool

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def tokenizer_json(self) -> str | None: ...


class CallableEmbedder:
    """Wraps any ``fn(list[str]) -> array`` as an embedder.

    ``name`` must be stable across runs: the store records it and refuses
    another. Give ``fingerprint`` if the function's weights can change under
    the same name.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], object],
        *,
        dim: int,
        name: str,
        fingerprint: str | None = None,
        normalized: bool = False,
        tokenizer_json: str | None = None,
    ) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        if not name or ":" in name and name.split(":", 1)[0] in _REGISTRY:
            raise InvalidInputError(
                f"embedder name {name!r} is empty or clashes with a built-in; choose another name"
            )
        self._fn = fn
        self.dim = dim
        self.name = name
        self.fingerprint = fingerprint or hashlib.sha256(name.encode()).hexdigest()[:16]
        self.normalized = normalized
        self._tokenizer_json = tokenizer_json

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.asarray(self._fn(list(texts)), dtype=np.float32)
        if out.ndim != 2 or out.shape != (len(texts), self.dim):
            raise InvalidInputError(
                f"embedder {self.name!r} returned shape {out.shape}, expected {(len(texts), self.dim)}"
            )
        return np.ascontiguousarray(out)

    def tokenizer_json(self) -> str | None:
        return self._tokenizer_json

    def __repr__(self) -> str:
        return f"CallableEmbedder(name={self.name!r}, dim={self.dim})"


class Precomputed:
    """For stores fed only precomputed vectors: text queries are refused."""

    normalized = False

    def __init__(self, dim: int, *, name: str = "precomputed", tokenizer_json: str | None = None) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.name = name if name.startswith("precomputed") else f"precomputed:{name}"
        self.fingerprint = hashlib.sha256(f"{self.name}/{dim}".encode()).hexdigest()[:16]
        self._tokenizer_json = tokenizer_json

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidInputError(
            "this store holds precomputed vectors and has no embedder: pass vectors= to add() "
            "and a vector to query(), or create the store with an embedder"
        )

    def tokenizer_json(self) -> str | None:
        return self._tokenizer_json

    def __repr__(self) -> str:
        return f"Precomputed(dim={self.dim})"


# spec prefix -> factory(argument) ; "minilm" has no argument.
_REGISTRY: dict[str, Callable[[str], Embedder]] = {}


def register(prefix: str, factory: Callable[[str], Embedder]) -> None:
    """Make ``resolve("PREFIX:ARG")`` (or ``resolve("PREFIX")``) call ``factory(ARG)``."""
    _REGISTRY[prefix] = factory


def unregister(prefix: str) -> None:
    """Forget a registered spec prefix (no error if unknown)."""
    _REGISTRY.pop(prefix, None)


def available() -> list[str]:
    return sorted(_REGISTRY)


def resolve(spec: str | Embedder) -> Embedder:
    """Turn a spec string (or an embedder object) into an embedder."""
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise InvalidInputError(
            f"embedder must be a spec string such as 'minilm' or an object with name, dim, "
            f"fingerprint, normalized, encode() and tokenizer_json(); got {type(spec).__name__}"
        )
    prefix, _, arg = spec.partition(":")
    if prefix == "precomputed":
        raise InvalidInputError(
            f"store uses precomputed vectors ({spec}); open it with embedder=ragstore.embedders.Precomputed(dim)"
        )
    factory = _REGISTRY.get(prefix)
    if factory is None:
        raise EmbedderNotAvailableError(
            f"unknown embedder {spec!r}; known: {', '.join(available())}. "
            "Pass an embedder object for a custom model."
        )
    return factory(arg)


def _minilm(arg: str) -> Embedder:
    from .minilm import MiniLM  # numpy encoder; imported lazily (weights load)

    return MiniLM(arg or None)


def _minilm_int8(arg: str) -> Embedder:
    from .onnx import MiniLMInt8  # needs the 'onnx' extra; imported lazily (it imports onnxruntime)

    return MiniLMInt8(arg or None)


def _minilm_torch(arg: str) -> Embedder:
    """``minilm-torch[:DEVICE]``: the same weights run by sentence-transformers on torch.

    For a GPU (``minilm-torch:cuda``; with no device, torch's choice: CUDA when
    present). Loads the local weights folder ``minilm`` finds: nothing is
    downloaded. Its vectors match ``minilm``'s to a cosine of ~0.9999998 on
    the CPU but carry their own fingerprint (another engine's rounding).
    """
    from .minilm import INSTALL_HINT, _fingerprint, find_default_weights

    folder = find_default_weights()
    if folder is None:
        raise EmbedderNotAvailableError(INSTALL_HINT.replace("minilm:", "minilm-torch:"))
    device = arg or None
    if device is None:
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"  # SentenceTransformerEmbedder names the missing packages
    emb = SentenceTransformerEmbedder(str(folder), device=device, batch_size=256 if device != "cpu" else 32)
    emb.name = "minilm-torch" + (f":{arg}" if arg else "")
    # of the weights, not of the folder's path: the store opens on any machine, CPU or GPU
    weights_fp = _fingerprint(folder / "model.safetensors")
    emb.fingerprint = hashlib.sha256(f"minilm-torch/{weights_fp}".encode()).hexdigest()[:16]
    return emb


def _file_sha16(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    np.maximum(norm, np.float32(1e-12), out=norm)
    x /= norm[:, None]
    return x


class SentenceTransformerEmbedder:
    """``sentence-transformers:NAME_OR_PATH``: any sentence-transformers model, run by torch.

    Needs ``pip install sentence-transformers`` (which needs torch). NAME is a
    Hugging Face model id (downloaded by sentence-transformers unless already in
    its cache; set ``HF_HUB_OFFLINE=1`` to forbid that) or a local folder.
    Vectors are L2-normalized (``normalize_embeddings=True``).
    """

    normalized = True

    def __init__(self, name_or_path: str, *, device: str | None = None, batch_size: int = 32) -> None:
        if not name_or_path:
            raise InvalidInputError(
                "the sentence-transformers embedder needs a model name or folder, "
                "e.g. 'sentence-transformers:sentence-transformers/all-MiniLM-L6-v2'"
            )
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbedderNotAvailableError(
                f"embedder 'sentence-transformers:{name_or_path}' needs the sentence-transformers package "
                f"({e}): install it with `pip install sentence-transformers` (it requires torch), "
                "or use the built-in numpy embedder 'minilm'"
            ) from None
        try:
            model = SentenceTransformer(name_or_path, device=device)
        except Exception as e:  # network, missing files, bad config ...
            raise EmbedderNotAvailableError(
                f"sentence-transformers could not load {name_or_path!r}: {type(e).__name__}: {e}. "
                "Pass an existing local folder or a model id already in the Hugging Face cache."
            ) from None
        self._model = model
        self._batch_size = batch_size
        self.name = f"sentence-transformers:{name_or_path}"
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            dim = int(model.encode(["x"], convert_to_numpy=True).shape[1])
        self.dim = int(dim)
        # name + parameter count + bytes of the first and last weight tensors:
        # cheap, and changes whenever the weights do (hashing every tensor of a
        # large model would take seconds).
        params = list(model.parameters())
        h = hashlib.sha256(f"{name_or_path}/{sum(p.numel() for p in params)}/{self.dim}".encode())
        for p in (params[0], params[-1]) if params else ():
            h.update(p.detach().to("cpu").contiguous().numpy().tobytes())
        self.fingerprint = h.hexdigest()[:16]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError("encode() takes a list of strings, not a single string: wrap it in a list")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self._model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def tokenizer_json(self) -> str | None:
        tok = getattr(self._model, "tokenizer", None)
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            return None
        try:
            return backend.to_str()
        except Exception:
            return None

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r}, dim={self.dim})"


class OnnxEmbedder:
    """``onnx:PATH``: a BERT-style encoder exported to ONNX, run by onnxruntime on the CPU.

    PATH is a folder with ``model.onnx`` and ``tokenizer.json`` (and
    optionally ``sentence_bert_config.json`` for ``max_seq_length``). The
    model takes ``input_ids`` and ``attention_mask`` (and ``token_type_ids``
    if it declares it) and returns token states (batch, seq, dim), which are
    mean-pooled over the mask, or already pooled vectors (batch, dim). Vectors
    are L2-normalized. Needs ``pip install onnxruntime``.
    """

    normalized = True
    max_batch_tokens = 8192
    max_batch_size = 128

    def __init__(self, path: str) -> None:
        if not path:
            raise InvalidInputError("the onnx embedder needs a folder: 'onnx:/path/to/folder'")
        folder = Path(path).expanduser()
        missing = [f for f in ("model.onnx", "tokenizer.json") if not (folder / f).is_file()]
        if missing:
            raise EmbedderNotAvailableError(
                f"onnx embedder folder {path!r} lacks {', '.join(missing)}: it must hold model.onnx "
                "and the model's tokenizer.json"
            )
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise EmbedderNotAvailableError(
                f"embedder 'onnx:{path}' needs onnxruntime ({e}): install it with `pip install onnxruntime`, "
                "or use the built-in numpy embedder 'minilm'"
            ) from None
        from tokenizers import Tokenizer

        folder = folder.resolve()
        self.path = folder
        self.name = f"onnx:{folder}"
        try:
            self._session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EmbedderNotAvailableError(
                f"onnxruntime could not load {folder / 'model.onnx'}: {e}"
            ) from None
        self._inputs = {i.name for i in self._session.get_inputs()}
        if "input_ids" not in self._inputs:
            raise EmbedderNotAvailableError(
                f"{folder / 'model.onnx'} has no 'input_ids' input (inputs: {sorted(self._inputs)}); "
                "export the encoder with input_ids and attention_mask inputs"
            )
        self._tokenizer_text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        max_len = 512
        st_cfg = folder / "sentence_bert_config.json"
        if st_cfg.is_file():
            max_len = int(json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length") or max_len)
        tok = Tokenizer.from_str(self._tokenizer_text)
        tok.no_padding()
        tok.enable_truncation(max_length=max_len)
        self._tok = tok
        self.max_seq_length = max_len
        self.fingerprint = _file_sha16(folder / "model.onnx")
        self.dim = int(self._run([tok.encode("x").ids or [0]]).shape[1])

    def _run(self, id_lists: list[list[int]]) -> np.ndarray:
        B = len(id_lists)
        L = max(len(i) for i in id_lists)
        ids = np.zeros((B, L), np.int64)
        mask = np.zeros((B, L), np.int64)
        for r, seq in enumerate(id_lists):
            ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
        feed = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        out = np.asarray(self._session.run(None, feed)[0], dtype=np.float32)
        if out.ndim == 3:
            m = mask.astype(np.float32)
            out = np.einsum("bl,bld->bd", m, out) / np.maximum(m.sum(1, keepdims=True), 1.0)
        elif out.ndim != 2:
            raise EmbedderNotAvailableError(f"{self.path / 'model.onnx'}: first output has shape {out.shape}")
        return _unit_rows(np.ascontiguousarray(out, dtype=np.float32))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError("encode() takes a list of strings, not a single string: wrap it in a list")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        if not texts:
            return out
        encs = [e.ids for e in self._tok.encode_batch(texts)]
        order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
        i = 0
        while i < len(order):
            j = i + 1
            while (
                j < len(order)
                and j - i < self.max_batch_size
                and (j - i + 1) * len(encs[order[j]]) <= self.max_batch_tokens
            ):
                j += 1
            idx = order[i:j]
            out[idx] = self._run([encs[k] for k in idx])
            i = j
        return out

    def tokenizer_json(self) -> str | None:
        return self._tokenizer_text

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.name!r}, dim={self.dim})"


register("minilm", _minilm)
register("minilm-int8", _minilm_int8)
register("minilm-torch", _minilm_torch)
register("sentence-transformers", SentenceTransformerEmbedder)
register("onnx", OnnxEmbedder)
