"""Test helpers: real data slices, and the deterministic embedder of ragstore.testing."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

from ragstore.testing import HashEmbedder, tokenizer_path

__all__ = [
    "REPO",
    "DATA",
    "HashEmbedder",
    "tokenizer_path",
    "wiki_docs",
    "read_jsonl",
    "wikitext",
    "gpt2_style_tokenizer",
]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


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
