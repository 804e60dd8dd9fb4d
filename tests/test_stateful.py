"""A stateful property test: random sequences of writes, queries, reopens,
checkpoints and compactions against a plain-dict model of the documents.

The reference for every query is a brute force over the model's chunks (cut
with ``Store.chunk``, embedded with the HashEmbedder, exact cosine). With
``exact=True`` the store must agree with it exactly (ties allowed to come in
either order at the k-th place); the HNSW path must never return a deleted,
excluded or unselected chunk, must return k hits when k exist, and must keep a
high recall.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ragstore
from helpers import HashEmbedder
from ragstore import AlreadyExistsError, Doc, NotFoundError

EMB = HashEmbedder()
# tmpfs when there is one: checkpoints and compaction fsync, which only slows a disk down here
# (durability under crashes is test_crash.py's subject)
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
EPS = 1e-5
VOCAB = (
    "river mountain city war king music album film team season species plant born died church "
    "school alpha beta gamma delta red blue"
).split()
SEPS = [" ", " ", " ", "  ", "\n", ", ", ". ", "\n\n"]
IDS = [f"d{i}" for i in range(8)]
SOURCES = ["a", "b", None]

texts = st.lists(st.tuples(st.sampled_from(VOCAB), st.sampled_from(SEPS)), min_size=1, max_size=20).map(
    lambda ws: "".join(w + s for w, s in ws)
)
query_texts = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=5).map(" ".join)
source_sel = st.none() | st.lists(st.sampled_from(["a", "b", None, "zzz"]), max_size=3, unique=True)
exclude_sel = st.none() | st.lists(st.sampled_from(IDS + ["nope"]), max_size=4)
ks = st.integers(1, 12)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ragstore-sm-", dir=SCRATCH)
        self.path = os.path.join(self.dir, "s")
        self.s = ragstore.open(
            self.path, embedder=EMB, chunk_tokens=4, index_dtype="f32", sync=False, checkpoint_every=25
        )
        self.model: dict[str, tuple[str, str | None]] = {}
        self.tomb = 0  # chunks deleted or replaced since the last compaction
        self.used_ids: set[int] = set()  # every chunk id ever handed out
        self.recalls: list[float] = []
        self._cache: dict[str, tuple[list, np.ndarray]] = {}

    # ------------------------------------------------------------ model helpers
    def chunks(self, text: str):
        c = self._cache.get(text)
        if c is None:
            chunks = self.s.chunk(text)
            V = EMB.encode([ch.text for ch in chunks])
            V /= np.linalg.norm(V, axis=1, keepdims=True)
            c = self._cache[text] = (chunks, V)
        return c

    def eligible(self, sources, exclude):
        """Model chunks a query may return: [(doc_id, position, text, next_text, source)], vectors."""
        want = None if sources is None else set(sources)
        rows, vecs = [], []
        for doc_id, (text, source) in sorted(self.model.items()):
            if want is not None and source not in want:
                continue
            if exclude and doc_id in exclude:
                continue
            chunks, V = self.chunks(text)
            for c in chunks:
                nxt = chunks[c.position + 1].text if c.position + 1 < len(chunks) else None
                rows.append((doc_id, c.position, c.text, nxt, source))
            vecs.append(V)
        return rows, (np.concatenate(vecs) if vecs else np.zeros((0, EMB.dim), np.float32))

    def reference(self, q: str, sources, exclude):
        rows, V = self.eligible(sources, exclude)
        qv = EMB.encode([q])[0]
        qv /= np.linalg.norm(qv)
        scores = V @ qv
        return rows, scores

    def check_hits(self, hits, q, k, sources, exclude, exact: bool) -> None:
        rows, scores = self.reference(q, sources, exclude)
        by_pos = {(r[0], r[1]): (r, float(sc)) for r, sc in zip(rows, scores, strict=True)}
        assert len(hits) == min(k, len(rows)), (len(hits), k, len(rows))
        seen = set()
        for h in hits:
            key = (h.doc_id, h.position)
            assert key in by_pos, f"hit {key} is deleted, excluded or of an unselected source"
            assert key not in seen, f"duplicate hit {key}"
            seen.add(key)
            (doc_id, pos, text, nxt, source), ref_score = by_pos[key]
            assert h.text == text and h.continuation == nxt and h.source == source
            assert self.model[doc_id][0][h.start : h.end] == h.text
            assert abs(h.score - ref_score) <= (EPS if exact else 1e-4)
        order = np.argsort(-scores, kind="stable")[:k]
        top = scores[order]
        if exact:
            np.testing.assert_allclose([h.score for h in hits], top, atol=EPS, rtol=0)
            if len(top):
                must = {(rows[i][0], rows[i][1]) for i in order if scores[i] > top[-1] + EPS}
                assert must <= seen
            for a, b in pairwise(hits):
                assert a.score > b.score or (a.score == b.score and a.chunk_id < b.chunk_id)
        else:
            for a, b in pairwise(hits):
                assert a.score >= b.score - 1e-6
            if len(top):
                good = sum(1 for h in hits if by_pos[(h.doc_id, h.position)][1] >= top[-1] - EPS)
                self.recalls.append(good / len(top))

    def note_new_ids(self, doc_id: str) -> None:
        d = self.s.get(doc_id)
        ids = set(range(d.first_chunk_id, d.first_chunk_id + d.n_chunks))
        assert not ids & self.used_ids, "a chunk id was reused"
        self.used_ids |= ids

    def expected_status(self, doc_id, text, source) -> str:
        old = self.model.get(doc_id)
        if old is None:
            return "added"
        return "unchanged" if old == (text, source) else "replaced"

    def apply(self, doc_id, text, source) -> str:
        status = self.expected_status(doc_id, text, source)
        if status == "replaced":
            self.tomb += len(self.chunks(self.model[doc_id][0])[0])
        self.model[doc_id] = (text, source)
        return status

    # ------------------------------------------------------------ rules: writes
    @rule(doc_id=st.sampled_from(IDS), text=texts, source=st.sampled_from(SOURCES), replace=st.booleans())
    def add(self, doc_id, text, source, replace):
        if doc_id in self.model and not replace:
            before = self.s.get(doc_id)
            with pytest.raises(AlreadyExistsError):
                self.s.add(doc_id, text, source=source)
            assert self.s.get(doc_id) == before
            return
        old = self.s.get(doc_id) if doc_id in self.model else None
        status = self.apply(doc_id, text, source)
        r = self.s.add(doc_id, text, source=source, replace=replace)
        assert (r.doc_id, r.status, r.n_chunks) == (doc_id, status, len(self.chunks(text)[0]))
        if status == "unchanged":
            assert self.s.get(doc_id).first_chunk_id == old.first_chunk_id
        else:
            self.note_new_ids(doc_id)

    @rule(
        docs=st.lists(st.tuples(st.sampled_from(IDS), texts, st.sampled_from(SOURCES)), min_size=1, max_size=5),
        batch_size=st.integers(1, 20),
    )
    def add_many(self, docs, batch_size):
        affected = {d for d, _, _ in docs}
        before = {d: self.s.get(d).first_chunk_id for d in affected if d in self.model}
        counts = {"added": 0, "replaced": 0, "unchanged": 0}
        for doc_id, text, source in docs:  # a later duplicate of an id wins
            counts[self.apply(doc_id, text, source)] += 1
        summary = self.s.add_many([Doc(d, t, s) for d, t, s in docs], replace=True, batch_size=batch_size)
        assert (summary.added, summary.replaced, summary.unchanged) == (
            counts["added"], counts["replaced"], counts["unchanged"])
        assert summary.documents == len(docs)
        for doc_id in affected:
            assert self.s.get(doc_id).text == self.model[doc_id][0]
            if before.get(doc_id) != self.s.get(doc_id).first_chunk_id:
                self.note_new_ids(doc_id)

    @rule(doc_id=st.sampled_from(IDS + ["nope"]))
    def delete(self, doc_id):
        if doc_id not in self.model:
            with pytest.raises(NotFoundError):
                self.s.delete(doc_id)
            return
        n = len(self.chunks(self.model[doc_id][0])[0])
        first = self.s.get(doc_id).first_chunk_id
        assert self.s.delete(doc_id) == n
        del self.model[doc_id]
        self.tomb += n
        assert doc_id not in self.s
        with pytest.raises(NotFoundError):
            self.s.get_chunk(first)

    @rule(ids=st.lists(st.sampled_from(IDS + ["nope"]), max_size=4))
    def delete_many(self, ids):
        n = 0
        for doc_id in dict.fromkeys(ids):
            if doc_id in self.model:
                n += len(self.chunks(self.model.pop(doc_id)[0])[0])
        assert self.s.delete_many(ids, missing_ok=True) == n
        self.tomb += n

    # ------------------------------------------------------------ rules: queries
    @rule(q=query_texts, k=ks, sources=source_sel, exclude=exclude_sel)
    def query_exact(self, q, k, sources, exclude):
        hits = self.s.query(q, k=k, sources=sources, exclude_docs=exclude, exact=True)
        self.check_hits(hits, q, k, sources, exclude, exact=True)

    @rule(q=query_texts, k=ks, sources=source_sel, exclude=exclude_sel, rerank=st.booleans())
    def query_hnsw(self, q, k, sources, exclude, rerank):
        hits = self.s.query(q, k=k, sources=sources, exclude_docs=exclude, rerank=rerank)
        self.check_hits(hits, q, k, sources, exclude, exact=False)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), k=ks)
    def query_own_chunk(self, data, k):
        doc_id = data.draw(st.sampled_from(sorted(self.model)))
        chunks, _ = self.chunks(self.model[doc_id][0])
        c = data.draw(st.sampled_from(chunks))
        for exact in (True, False):
            hits = self.s.query(c.text, k=k, exact=exact)
            self.check_hits(hits, c.text, k, None, None, exact=exact)
            assert abs(hits[0].score - 1.0) < 1e-4 and hits[0].text == c.text

    @rule(data=st.data(), qs=st.lists(query_texts, min_size=1, max_size=3), k=ks, sources=source_sel,
          exact=st.booleans())
    def query_many(self, data, qs, k, sources, exact):
        # exclusions: none, one flat list for every query, or one set per query
        mode = data.draw(st.sampled_from(["none", "flat", "per-query"]))
        if mode == "none":
            exclude, per = None, [None] * len(qs)
        elif mode == "flat":
            exclude = data.draw(st.lists(st.sampled_from(IDS), max_size=4))
            per = [exclude] * len(qs)
        else:
            exclude = per = data.draw(st.lists(exclude_sel, min_size=len(qs), max_size=len(qs)))
        many = self.s.query_many(qs, k=k, sources=sources, exclude_docs=exclude, exact=exact)
        assert len(many) == len(qs)
        for q, hits, ex in zip(qs, many, per, strict=True):
            self.check_hits(hits, q, k, sources, ex, exact=exact)

    # ------------------------------------------------------------ rules: lifecycle
    @rule()
    def reopen(self):
        self.s.close()
        self.s = ragstore.open(self.path, embedder=EMB)

    @rule()
    def reopen_without_index(self):
        self.s.close()
        shutil.rmtree(os.path.join(self.path, "index"), ignore_errors=True)
        self.s = ragstore.open(self.path, embedder=EMB)

    @rule(q=query_texts, k=ks)
    def concurrent_reader(self, q, k):
        with ragstore.open(self.path, embedder=EMB, readonly=True) as r:
            assert r.stats().documents == len(self.model)
            hits = r.query(q, k=k, exact=True)
            self.check_hits(hits, q, k, None, None, exact=True)
            hits = r.query(q, k=k)
            self.check_hits(hits, q, k, None, None, exact=False)

    @rule()
    def checkpoint(self):
        self.s.checkpoint()
        assert os.path.exists(os.path.join(self.path, "index", "manifest.msgpack")) or not self.model

    @rule()
    def compact(self):
        r = self.s.compact()
        assert r.tombstones_removed == self.tomb
        assert r.lmdb_compacted  # no other Store has it open
        self.tomb = 0

    # ------------------------------------------------------------ invariants
    @invariant()
    def counts_match_model(self):
        st_ = self.s.stats()
        n_chunks = n_tokens = 0
        per_source: dict[str, int] = {}
        for text, source in self.model.values():
            chunks, _ = self.chunks(text)
            n_chunks += len(chunks)
            n_tokens += sum(c.n_tokens for c in chunks)
            per_source[source or ""] = per_source.get(source or "", 0) + len(chunks)
        assert (st_.documents, st_.chunks, st_.tokens) == (len(self.model), n_chunks, n_tokens)
        assert st_.sources == per_source
        assert st_.index_vectors == n_chunks and st_.unindexed == 0
        assert st_.deleted_not_compacted == self.tomb
        assert len(self.s) == len(self.model)
        assert sorted(self.s.doc_ids()) == sorted(self.model)

    @invariant()
    def documents_round_trip(self):
        for doc_id, (text, source) in self.model.items():
            d = self.s.get(doc_id)
            assert (d.text, d.source) == (text, source)

    @invariant()
    def store_checks_ok(self):
        rep = self.s.check()
        assert rep.ok, rep.problems

    def teardown(self):
        try:
            self.s.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        if len(self.recalls) >= 5:
            assert np.mean(self.recalls) >= 0.9, self.recalls


StoreMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreMachine = StoreMachine.TestCase
