"""ragstore.cluster on a simulated multi-node Ray cluster (ray.cluster_utils.Cluster: 3 nodes
of 1 CPU, small object stores), against one ordinary store holding the same documents."""

from __future__ import annotations

import sys
import threading
import time

import pytest

# not importorskip: the test extra installs ray (pyproject), so CI must run these tests
import ray
from ray.cluster_utils import Cluster

import ragstore
from helpers import HashEmbedder, wiki_docs
from ragstore import cluster
from ragstore.cluster import PartialResultWarning, RayNotAvailableError, ShardError
from ragstore.cluster.routing import shard_of

N_DOCS = 240
SHARDS = 3
SOURCES = ("wiki-a", "wiki-b", "wiki-c")
NODE = dict(num_cpus=1, object_store_memory=80 * 1024 * 1024)


def _docs(n: int = N_DOCS, start: int = 0) -> list[dict]:
    raw = wiki_docs(start + n)[start:]
    return [{"id": f"doc-{start + i}", "text": d["text"][:1200], "source": SOURCES[(start + i) % 3],
             "meta": {"i": start + i}} for i, d in enumerate(raw)]


def _key(hits):
    return [(h.doc_id, h.position, h.score, h.text, h.continuation, h.source) for h in hits]


QUERIES = ["the history of the city", "a famous american singer and songwriter", "football club in england",
           "the river flows into the sea", "species of plant in the family", "university research and science",
           "the war ended with a treaty", "album released by the band"]


@pytest.fixture(scope="module")
def ray_cluster():
    c = Cluster(initialize_head=True, head_node_args=dict(NODE, include_dashboard=False))
    workers = [c.add_node(**NODE) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    c.workers = workers
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def stores(ray_cluster, tmp_path_factory):
    """(the sharded store, one store over the same documents): mutated alike by the tests."""
    base = tmp_path_factory.mktemp("cluster")
    docs = _docs()
    summary = cluster.build(base / "sharded", docs, shards=SHARDS, embedder=HashEmbedder(), embed_actors=2,
                            embed_cpus=0.5, batch_docs=64)
    assert summary.written == N_DOCS and summary.skipped == 0 and sum(summary.per_shard) == N_DOCS
    single = ragstore.open(base / "single", embedder=HashEmbedder())
    single.add_many(docs)
    cs = cluster.open(base / "sharded", embedder=HashEmbedder())
    yield cs, single
    cs.close()
    single.close()


def test_exact_search_equals_one_store(stores):
    cs, single = stores
    for opts in ({}, {"sources": ["wiki-b"]}, {"exclude_docs": ["doc-1", "doc-2", "doc-7"]}):
        got = cs.query_many(QUERIES, k=10, exact=True, **opts)
        want = single.query_many(QUERIES, k=10, exact=True, **opts)
        assert [_key(h) for h in got] == [_key(h) for h in want], opts
    # per-query exclusions, and a single vector query
    ex = [[h.doc_id for h in hs[:3]] for hs in single.query_many(QUERIES, k=3, exact=True)]
    assert [_key(h) for h in cs.query_many(QUERIES, k=5, exact=True, exclude_docs=ex)] == \
        [_key(h) for h in single.query_many(QUERIES, k=5, exact=True, exclude_docs=ex)]
    v = single.embed([QUERIES[0]])[0]
    assert _key(cs.query(v, k=7, exact=True)) == _key(single.query(v, k=7, exact=True))


def test_hnsw_recall_against_one_store(stores):
    cs, single = stores
    k = 10
    qs = QUERIES + [d["text"][:80] for d in _docs(24)]
    got = cs.query_many(qs, k=k)
    want = single.query_many(qs, k=k, exact=True)
    found = sum(len({(h.doc_id, h.position) for h in g} & {(h.doc_id, h.position) for h in w})
                for g, w in zip(got, want, strict=True))
    assert found / (k * len(qs)) >= 0.95
    for hits in got:  # exact scores (re-scored from LMDB), best first
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_lexical_and_hybrid_modes(stores):
    cs, single = stores
    lex = cs.query_many(QUERIES, k=5, mode="lexical")
    hyb = cs.query_many(QUERIES, k=5, mode="hybrid")
    for hits in lex + hyb:
        assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # a hit's cluster chunk id gives the same chunk back
    h = lex[0][0]
    assert _key([cs.get_chunk(h.chunk_id)])[0][:2] == (h.doc_id, h.position)
    # lexical with a filter: only that source
    assert all(h.source == "wiki-c" for h in cs.query(QUERIES[1], k=5, mode="lexical", sources=["wiki-c"]))


def test_stats_check_and_routing(stores):
    cs, single = stores
    st = cs.stats()
    assert (st.documents, st.chunks) == (len(single), single.stats().chunks)
    assert st.sources == single.sources()
    assert len(st.shards) == SHARDS and all(s.documents > 0 for s in st.shards)
    report = cs.check()
    assert report.ok, report.problems
    ids = list(cs.doc_ids())
    assert sorted(ids) == sorted(single.doc_ids()) and len(ids) == len(set(ids))  # never in two shards
    assert cs.get("doc-5").text == single.get("doc-5").text


def test_updates_are_routed(stores):
    cs, single = stores
    new = _docs(6, start=N_DOCS)
    assert cs.add_many(new).added == 6
    single.add_many(new)
    cs.add("doc-3", "a replaced text about rivers and the sea", source="wiki-a", replace=True)
    single.add("doc-3", "a replaced text about rivers and the sea", source="wiki-a", replace=True)
    with pytest.raises(ragstore.AlreadyExistsError):
        cs.add("doc-4", "again")
    gone = cs.delete_many(["doc-10", "doc-11"])
    assert sorted(gone.doc_ids) == ["doc-10", "doc-11"] and gone.chunks > 0
    single.delete_many(["doc-10", "doc-11"])
    with pytest.raises(ragstore.NotFoundError):
        cs.delete("doc-10")
    assert "doc-10" not in cs and "doc-3" in cs and len(cs) == len(single)
    # readers see the writers' commits at their next query
    got = cs.query_many(QUERIES, k=10, exact=True)
    assert [_key(h) for h in got] == [_key(h) for h in single.query_many(QUERIES, k=10, exact=True)]
    assert cs.check().ok


def _kill_mid_query(cs, shard: int, mode: str):
    """Run a query whose shard readers hold it 1.5 s, and kill shard ``shard``'s reader meanwhile."""
    out: dict = {}
    cs._hold = 1.5

    def run():
        try:
            with pytest.warns(PartialResultWarning) if mode == "partial" else _nothing():
                out["hits"] = cs.query_many(QUERIES, k=10, exact=True, on_shard_error=mode)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.7)
    ray.kill(cs._readers[shard][0], no_restart=False)  # killed, and restarted by Ray
    t.join(180)
    cs._hold = 0.0
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_reader_killed_mid_query_is_restarted_and_retried(stores):
    cs, single = stores
    before = cs.retried
    out = _kill_mid_query(cs, 1, "retry")
    assert "error" not in out, out.get("error")
    assert [_key(h) for h in out["hits"]] == [_key(h) for h in single.query_many(QUERIES, k=10, exact=True)]
    assert cs.retried > before
    assert ray.get(cs._readers[1][0].where.remote())["restarted"]  # reopened from its store on disk


def test_reader_killed_mid_query_raise_or_partial(stores):
    cs, single = stores
    held = set(cs._ray.get(cs._readers[2][0].doc_ids.remote()))
    want = [_key(h) for h in single.query_many(QUERIES, k=10, exact=True, exclude_docs=sorted(held))]
    out = _kill_mid_query(cs, 2, "raise")
    err = out.get("error")
    assert isinstance(err, ShardError) and err.shards == (2,) and "shard 2" in str(err)
    assert [_key(h) for h in err.hits] == want  # the other shards' merged answer
    out = _kill_mid_query(cs, 2, "partial")
    assert "error" not in out, out.get("error")
    assert [_key(h) for h in out["hits"]] == want
    # and the restarted reader answers again
    got = cs.query_many(QUERIES, k=10, exact=True)
    assert [_key(h) for h in got] == [_key(h) for h in single.query_many(QUERIES, k=10, exact=True)]


def test_node_lost_during_build_then_rerun_completes(ray_cluster, tmp_path):
    docs = _docs(150)
    root = tmp_path / "sharded"
    lost: list = []

    def lose_a_node(progress):
        if lost:
            return
        by_node: dict = {}
        for a in ray._private.state.actors().values():
            if a.get("ActorClassName") == "ShardWriter" and a.get("State") == "ALIVE":
                node = a.get("Address", {}).get("NodeID")
                by_node[node] = by_node.get(node, 0) + 1
        victims = sorted(ray_cluster.workers, key=lambda n: -by_node.get(n.node_id, 0))
        lost.append((victims[0], by_node.get(victims[0].node_id, 0)))
        ray_cluster.remove_node(victims[0])

    first = None
    try:
        first = cluster.build(root, docs, shards=SHARDS, embedder=HashEmbedder(), embed_actors=2, embed_cpus=0.5,
                              batch_docs=25, on_progress=lose_a_node, on_shard_error="raise", retry_timeout=60)
    except ShardError as e:
        assert "rerun build() to resume" in str(e)
    assert lost and lost[0][1] >= 1, "no writer ran on a worker node"
    ray_cluster.workers.remove(lost[0][0])
    ray_cluster.workers.append(ray_cluster.add_node(**NODE))  # the cluster is 3 nodes again
    # every shard consistent after the loss, then the rerun completes what is missing
    with cluster.open(root, embedder=HashEmbedder()) as cs:
        report = cs.check()
        assert report.ok, report.problems
        partial = len(cs)
    # the build stopped at the loss (on_shard_error="raise"), or Ray restarted the writer in time
    assert (first is None and partial < len(docs)) or (first is not None and partial == len(docs))
    second = cluster.build(root, docs, embedder=HashEmbedder(), embed_actors=2, embed_cpus=0.5, batch_docs=50)
    assert second.skipped == partial and second.written == len(docs) - partial
    assert first is None or first.documents == len(docs)
    with cluster.open(root, embedder=HashEmbedder()) as cs:
        assert cs.check().ok and len(cs) == len(docs)
        single = ragstore.open(tmp_path / "single", embedder=HashEmbedder())
        single.add_many(docs)
        assert [_key(h) for h in cs.query_many(QUERIES, k=8, exact=True)] == \
            [_key(h) for h in single.query_many(QUERIES, k=8, exact=True)]
        single.close()
    third = cluster.build(root, docs, embedder=HashEmbedder(), embed_actors=1, embed_cpus=0.5)
    assert third.skipped == len(docs) and third.written == 0  # resumable: nothing left to do


def test_route_by_source(ray_cluster, tmp_path):
    docs = _docs(60)
    cluster.build(tmp_path / "by-source", docs, shards=SHARDS, route="source", embedder=HashEmbedder(),
                  embed_actors=1, embed_cpus=0.5)
    single = ragstore.open(tmp_path / "single", embedder=HashEmbedder())
    single.add_many(docs)
    with cluster.open(tmp_path / "by-source", embedder=HashEmbedder()) as cs:
        for st, held in zip(cs.stats().shards, [[s for s in SOURCES if shard_of(s, SHARDS) == i]
                                                for i in range(SHARDS)], strict=True):
            assert sorted(st.sources) == sorted(held)  # each source in one shard
        for opts in ({}, {"sources": ["wiki-b"]}):
            assert [_key(h) for h in cs.query_many(QUERIES, k=6, exact=True, **opts)] == \
                [_key(h) for h in single.query_many(QUERIES, k=6, exact=True, **opts)]
        # a document whose source changes moves to the new source's shard
        with pytest.raises(ragstore.AlreadyExistsError):
            cs.add("doc-0", "moved text", source="wiki-new")
        cs.add("doc-0", "moved text", source="wiki-new", replace=True)
        assert list(cs.doc_ids()).count("doc-0") == 1 and cs.get("doc-0").source == "wiki-new"
        assert cs.check().ok
    single.close()


def test_routing_is_stable():
    assert shard_of("doc-1", 4) == shard_of("doc-1", 4)
    assert {shard_of(f"d{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert shard_of("doc-1", 1) == 0


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayNotAvailableError, match=r"pip install 'ragstore\[ray\]'"):
        cluster.build(tmp_path / "x", [], shards=2, embedder=HashEmbedder())
