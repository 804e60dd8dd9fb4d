"""Chunking: exact offsets, fixed token windows, byte-exact rebuild, input errors."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

import ragstore
from helpers import tokenizer_path, wiki_docs
from ragstore.engine.chunking import Chunker, check_text, load_tokenizer
from ragstore.errors import InvalidInputError, RagstoreError

TOK_PATH = tokenizer_path()
TOK_JSON = Path(TOK_PATH).read_text(encoding="utf-8")
_CHUNKERS: dict[int, Chunker] = {}


def chunker(ct: int) -> Chunker:
    c = _CHUNKERS.get(ct)
    if c is None:
        c = _CHUNKERS[ct] = Chunker(TOK_PATH, ct)
    return c


_RAW = Tokenizer.from_file(TOK_PATH)
_RAW.no_truncation()
_RAW.no_padding()


def raw_tokens(text: str) -> list[tuple[int, int]]:
    """Offsets of an independent, untruncated encoding of ``text``."""
    return _RAW.encode(text, add_special_tokens=False).offsets


def assert_chunking_invariants(text: str, cd, ct: int) -> None:
    chunks = cd.chunks
    assert chunks, "a non-blank text makes at least one chunk"
    assert len(cd.pres) == len(chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert 0 <= c.start <= c.end <= len(text)
    for a, b in pairwise(chunks):
        assert a.end <= b.start, "chunks overlap or go backwards"
    assert all(c.n_tokens == ct for c in chunks[:-1])
    assert 1 <= chunks[-1].n_tokens <= ct
    rebuilt = "".join(p + c.text for p, c in zip(cd.pres, chunks, strict=True)) + cd.tail
    assert rebuilt == text
    # pres are exactly the gaps between chunks
    prev = 0
    for p, c in zip(cd.pres, chunks, strict=True):
        assert p == text[prev : c.start]
        prev = c.end
    assert cd.tail == text[prev:]


# ---------------------------------------------------------------- properties

# unicode incl. astral characters, combining marks, CJK, whitespace of all kinds
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # no lone surrogates
    min_size=1,
    max_size=300,
)
wordy = st.lists(
    st.one_of(
        st.sampled_from(
            ["the", "cat", "Ünïcödé", "naïve", "日本語", "🙂🙃", "x" * 40, "don't", "3.14", "C++", "각각", "ো"]
        ),
        st.sampled_from([" ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u2003", "\n\n  "]),
        st.text(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=80,
).map("".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(texts, wordy), ct=st.sampled_from([1, 2, 3, 7, 16, 64]))
def test_chunk_properties(text, ct):
    ch = chunker(ct)
    try:
        check_text(text)
    except InvalidInputError:
        assert not text.strip()
        return
    offsets = raw_tokens(text)
    if not offsets:  # only control / unknown characters: an error, not an empty doc
        with pytest.raises(InvalidInputError):
            ch.chunk(text)
        return
    cd = ch.chunk(text)
    assert_chunking_invariants(text, cd, ct)
    assert cd.n_tokens == len(offsets) == ch.token_count(text)
    assert len(cd.chunks) == -(-len(offsets) // ct)
    # chunk boundaries follow the token offsets
    for c in cd.chunks:
        first = offsets[c.position * ct]
        assert c.start >= first[0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(texts, wordy), min_size=1, max_size=6), st.sampled_from([2, 5, 64]))
def test_chunk_many_equals_chunk(docs, ct):
    ch = chunker(ct)
    docs = [d for d in docs if d.strip() and raw_tokens(d)]
    assume(docs)
    assert ch.chunk_many(docs) == [ch.chunk(d) for d in docs]


@pytest.mark.parametrize("ct", [1, 4, 16, 64, 1000])
def test_real_documents(ct):
    ch = chunker(ct)
    for d in wiki_docs(30):
        text = d["text"]
        cd = ch.chunk(text)
        assert_chunking_invariants(text, cd, ct)
        n = ch.token_count(text)
        assert cd.n_tokens == n
        assert len(cd.chunks) == -(-n // ct)


def test_known_split():
    ch = chunker(2)
    text = "  Hello, world!\n\nBye  "
    cd = ch.chunk(text)
    # tokens: hello , world ! bye
    assert [c.text for c in cd.chunks] == ["Hello,", "world!", "Bye"]
    assert [c.n_tokens for c in cd.chunks] == [2, 2, 1]
    assert cd.pres == ["  ", " ", "\n\n"]
    assert cd.tail == "  "
    assert [(c.start, c.end) for c in cd.chunks] == [(2, 8), (9, 15), (17, 20)]


@pytest.mark.parametrize("ct", [1, 2, 3, 4])
def test_characters_that_make_several_tokens(ct):
    # a Hangul syllable decomposes into 2-3 WordPiece tokens sharing one character's offsets
    text = "각 간갈 ো x각y"
    cd = chunker(ct).chunk(text)
    assert_chunking_invariants(text, cd, ct)
    assert cd.n_tokens == len(raw_tokens(text)) > len(text.split())


def test_chunk_text_is_original_not_detokenized():
    # the tokenizer lower-cases and splits punctuation; chunks must keep the original
    text = "THE Quick-Brown FOX’s naïve café — 日本語テキスト!"
    cd = chunker(3).chunk(text)
    assert "".join(p + c.text for p, c in zip(cd.pres, cd.chunks, strict=True)) + cd.tail == text
    assert any(any(ch.isupper() for ch in c.text) for c in cd.chunks)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", ["", " ", "\n\t \r\n", "\u00a0\u2003", b"", b"   "])
def test_blank_text_rejected(bad):
    with pytest.raises(InvalidInputError):
        check_text(bad)


def test_invalid_utf8_and_surrogates():
    with pytest.raises(InvalidInputError, match="UTF-8"):
        check_text(b"abc \xff\xfe def")
    with pytest.raises(InvalidInputError, match="surrogate"):
        check_text("abc \ud800 def")
    with pytest.raises(InvalidInputError):
        check_text(12345)
    with pytest.raises(InvalidInputError):
        check_text(None)
    # valid UTF-8 bytes are decoded
    assert check_text("héllo wörld".encode()) == "héllo wörld"
    assert check_text(bytearray(b"abc")) == "abc"


def test_text_without_tokens_rejected():
    # control characters only: BERT's normalizer drops them all
    with pytest.raises(InvalidInputError, match="no tokens"):
        chunker(4).chunk("\x01\x02\x03")


@pytest.mark.parametrize("ct", [0, -1, 1.5, "8", True, None])
def test_bad_chunk_tokens(ct):
    with pytest.raises(InvalidInputError):
        Chunker(TOK_PATH, ct)


@pytest.mark.parametrize(
    "spec", ["/nonexistent/tokenizer.json", "{not json", '{"version": "1.0"}', 42, None, b"{}"]
)
def test_bad_tokenizer_spec(spec):
    with pytest.raises(InvalidInputError):
        load_tokenizer(spec)


def test_errors_are_ragstore_errors():
    for exc in (InvalidInputError,):
        assert issubclass(exc, RagstoreError)
    with pytest.raises(RagstoreError):
        check_text("   ")


# ---------------------------------------------------------------- tokenizer forms

SAMPLE = wiki_docs(3)[2]["text"]


def test_tokenizer_path_json_object_agree():
    a = Chunker(TOK_PATH, 16)
    b = Chunker(TOK_JSON, 16)
    c = Chunker(Tokenizer.from_file(TOK_PATH), 16)
    d = Chunker("\n  " + TOK_JSON, 16)  # JSON text with leading whitespace
    ref = a.chunk(SAMPLE)
    assert len(ref.chunks) > 3
    for other in (b, c, d):
        assert other.chunk(SAMPLE) == ref
    assert a.tokenizer_hash == b.tokenizer_hash


def test_tokenizer_pathlike():
    assert Chunker(Path(TOK_PATH), 16).chunk(SAMPLE) == Chunker(TOK_PATH, 16).chunk(SAMPLE)


def test_tokenizer_with_truncation_chunks_whole_doc():
    assert json.loads(TOK_JSON)["truncation"] is not None  # the shipped file truncates at 128
    tok = Tokenizer.from_file(TOK_PATH)
    tok.enable_truncation(max_length=8)
    tok.enable_padding(length=8)
    ch = Chunker(tok, 16)
    text = " ".join(d["text"] for d in wiki_docs(5))
    cd = ch.chunk(text)
    assert_chunking_invariants(text, cd, 16)
    assert cd.n_tokens == len(raw_tokens(text)) > 128
    assert cd.chunks[-1].end > len(text) - 20
    # the caller's tokenizer object is not modified
    assert tok.truncation is not None and tok.truncation["max_length"] == 8
    # the JSON form with truncation configured behaves the same
    assert Chunker(tok.to_str(), 16).chunk(text).chunks == cd.chunks


def test_store_chunk_uses_store_settings(tmp_path, emb):
    with ragstore.open(tmp_path / "s", embedder=emb, chunk_tokens=5) as s:
        chunks = s.chunk(SAMPLE)
        assert chunks == chunker(5).chunk(SAMPLE).chunks
        with pytest.raises(InvalidInputError):
            s.chunk("  \n")
        with pytest.raises(InvalidInputError):
            s.chunk(b"\xc3\x28")


# ---------------------------------------------------------------- long texts: tokenized in windows
def _whole(ch: Chunker, text: str):
    """The chunks of one tokenizer call on the whole text (what windows must reproduce)."""
    return ch._split(text, [ch.tokenizer.encode(text, add_special_tokens=False).offsets])


def _texts_for_windows() -> dict[str, str]:
    from helpers import wikitext

    prose = wikitext("test", 60_000)
    return {
        "prose": prose,
        "double spaces and newlines": prose.replace(". ", ".  \n\n "),
        "no spaces": "".join(prose.split())[:40_000],
        "cjk": "東京は日本の首都であり、世界最大の都市圏の一つです。" * 1500,
        "accents and marks": ("Ünïcode ñ e\u0301 cafe\u0301 " * 3000),
        "one long word": "x" * 30_000 + " end",
    }


@pytest.mark.parametrize("tok", ["minilm", "gpt2-style"])
def test_windowed_tokenization_chunks_exactly_as_whole(tok, monkeypatch):
    """regression: a 50 MB document was tokenized in one call (6.7 GB, ~570 s); long texts now go in
    windows, which must cut exactly the same chunks as one call on the whole text (small windows here)"""
    from helpers import gpt2_style_tokenizer
    from ragstore.engine import chunking

    for name, value in (("BIG_TEXT", 5000), ("WINDOW", 3000), ("OVERLAP", 600), ("SETTLED", 300),
                        ("WINDOWS_PER_CALL", 3)):
        monkeypatch.setattr(chunking, name, value)
    windows = []
    real = Chunker._window_offsets

    def spy(self, text):
        windows.append(len(text))
        return real(self, text)

    monkeypatch.setattr(Chunker, "_window_offsets", spy)
    for ct in (7, 64):
        ch = Chunker(TOK_PATH if tok == "minilm" else gpt2_style_tokenizer(), ct)
        for name, text in _texts_for_windows().items():
            got = ch.chunk(text)
            want = _whole(ch, text)
            assert got == want, f"{tok} ct={ct} {name}: windowed chunks differ from whole-text chunks"
            assert "".join(p + c.text for p, c in zip(got.pres, got.chunks, strict=True)) + got.tail == text
            if name != "one long word":  # (MiniLM's [UNK] for a 30,000-letter word spans any cut: whole)
                list(real(ch, text))  # windowed without falling back to one call (which would raise _NoWindows)
    assert windows, "long texts must take the windowed path"
