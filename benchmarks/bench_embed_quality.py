"""Retrieval quality of an embedder against the float32 numpy reference ("minilm").

    python benchmarks/bench_embed_quality.py [--embedder minilm-int8] [--chunks 5000] [--queries 500]
        [--distractors 2000] [--questions 1000] [--out .cache/bench/embed_quality.json]

Three measures, each computed for the reference ``minilm`` and the candidate
(default ``minilm-int8``) on the same texts:

1. agreement per chunk: the cosine between the two embeddings of each of the
   first --chunks chunks of /work/shared/data/wiki/wiki-AA.jsonl.gz, cut by
   ragstore's own chunker (64 tokens, the store's default); mean, min, p1;
2. neighbour overlap: for --queries of those chunks (a seeded sample), the
   10 nearest other chunks among all --chunks under each embedder (exact inner
   product); the mean size of the intersection / 10;
3. SQuAD answer-in-top-k: the 24 articles of squad-dev-a (one document each,
   paragraphs joined by a blank line) are chunked beside the first
   --distractors wiki-AA articles; for a seeded sample of --questions
   questions, a hit at k is a gold answer, normalized as SQuAD's evaluation
   does (lower case, no punctuation, no articles, single spaces), occurring as
   whole words in one of the k nearest chunks (exact search, so the index's
   approximation does not blur the comparison of the embedders).

The chunks of (1) are the first chunks of the distractor articles, so their
embeddings are computed once. Embeddings are cached under .cache/bench/quality/
(git-ignored), keyed by the embedder's fingerprint and a hash of the texts, so
a rerun only embeds what changed. The machine may be shared: the load average
is printed; quality figures do not depend on it, the timings do.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shlex
import string
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import machine  # noqa: E402
from ragstore.embedders import resolve  # noqa: E402
from ragstore.engine.chunking import Chunker  # noqa: E402

DATA = Path(os.environ.get("RAGSTORE_SHARED_DATA", "/work/shared/data"))
WIKI = DATA / "wiki" / "wiki-AA.jsonl.gz"
SQUAD = DATA / "squad" / "squad-dev-a.json.gz"
CACHE = REPO / ".cache" / "bench" / "quality"


def normalize(s: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def wiki_docs(n: int) -> list[str]:
    out = []
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            if text.strip():
                out.append(text)
                if len(out) >= n:
                    break
    return out


def squad() -> tuple[list[str], list[tuple[str, list[str]]]]:
    data = json.load(gzip.open(SQUAD, "rt", encoding="utf-8"))["data"]
    docs = ["\n\n".join(p["context"] for p in a["paragraphs"]) for a in data]
    qas = [(q["question"], list(q["answers"])) for a in data for p in a["paragraphs"] for q in p["qas"]]
    return docs, qas


def embed_cached(emb, texts: list[str], what: str) -> tuple[np.ndarray, float | None]:
    """Embeddings of ``texts``, from the cache if there; the seconds it took if computed."""
    h = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{what}-{emb.fingerprint}-{h}.npy"
    if path.is_file():
        return np.load(path), None
    t = time.perf_counter()
    vecs = emb.encode(texts)
    dt = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    os.replace(tmp, path)
    return vecs, dt


def topk(q: np.ndarray, x: np.ndarray, k: int, exclude_self: np.ndarray | None = None) -> np.ndarray:
    s = q @ x.T
    if exclude_self is not None:
        s[np.arange(len(q)), exclude_self] = -np.inf
    idx = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, idx, axis=1), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default="minilm", help="reference embedder spec (default minilm)")
    ap.add_argument("--embedder", default="minilm-int8", help="candidate embedder spec (default minilm-int8)")
    ap.add_argument("--chunks", type=int, default=5000, help="wiki chunks for agreement and overlap (default 5000)")
    ap.add_argument("--queries", type=int, default=500, help="query chunks for the neighbour overlap (default 500)")
    ap.add_argument("--distractors", type=int, default=2000, help="wiki articles beside SQuAD (default 2000)")
    ap.add_argument("--questions", type=int, default=1000, help="SQuAD questions asked (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / ".cache" / "bench" / "embed_quality.json"), help="JSON result file")
    args = ap.parse_args()

    command = "python " + shlex.join([os.path.relpath(sys.argv[0], os.getcwd())] + sys.argv[1:])
    print(f"command: {command}")
    mach = machine()
    print(f"machine: {mach.get('cpu_model', '?')}, {mach['cpu_count']} cores, SIMD {'/'.join(mach.get('simd', []))}")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    ref = resolve(args.reference)
    cand = resolve(args.embedder)
    print(f"reference: {ref!r} (fingerprint {ref.fingerprint}); candidate: {cand!r} (fingerprint {cand.fingerprint})")
    chunker = Chunker(ref.tokenizer_json(), 64)

    wiki = wiki_docs(args.distractors)
    sq_docs, qas = squad()
    wiki_chunks = [c.text for d in chunker.chunk_many(wiki) for c in d.chunks]
    sq_chunks = [c.text for d in chunker.chunk_many(sq_docs) for c in d.chunks]
    if len(wiki_chunks) < args.chunks:
        raise SystemExit(f"only {len(wiki_chunks)} chunks in {args.distractors} articles; raise --distractors")
    corpus = wiki_chunks + sq_chunks
    rng = np.random.default_rng(args.seed)
    q_idx = rng.choice(len(qas), size=min(args.questions, len(qas)), replace=False)
    questions = [qas[i][0] for i in q_idx]
    answers = [[normalize(a) for a in qas[i][1] if normalize(a)] for i in q_idx]
    print(
        f"corpus: {len(wiki)} wiki articles ({len(wiki_chunks)} chunks) + {len(sq_docs)} SQuAD articles "
        f"({len(sq_chunks)} chunks); {len(questions)} of {len(qas)} questions"
    )

    vec: dict[str, dict[str, np.ndarray]] = {}
    timing: dict[str, dict[str, float | None]] = {}
    for label, emb in (("reference", ref), ("candidate", cand)):
        c, tc = embed_cached(emb, corpus, "corpus")
        q, tq = embed_cached(emb, questions, "questions")
        vec[label] = {"corpus": c, "questions": q}
        timing[label] = {"corpus_s": tc, "questions_s": tq}
        note = f"embedded in {tc:.1f} s ({len(corpus) / tc:.1f} chunks/s)" if tc else "from the cache"
        print(f"{label} {emb.name}: {len(corpus)} chunks {note}, load {os.getloadavg()[0]:.2f}", flush=True)

    # 1. agreement
    a, b = vec["reference"]["corpus"][: args.chunks], vec["candidate"]["corpus"][: args.chunks]
    cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    agree = {"mean": float(cos.mean()), "min": float(cos.min()), "p1": float(np.percentile(cos, 1))}
    print(f"\ncosine reference/candidate over {args.chunks} chunks: mean {agree['mean']:.5f}, "
          f"min {agree['min']:.5f}, p1 {agree['p1']:.5f}")

    # 2. neighbour overlap
    qs = rng.choice(args.chunks, size=min(args.queries, args.chunks), replace=False)
    na = topk(a[qs], a, 10, exclude_self=qs)
    nb = topk(b[qs], b, 10, exclude_self=qs)
    overlap = np.array([len(set(x) & set(y)) / 10 for x, y in zip(na, nb, strict=True)])
    print(f"top-10 neighbour overlap over {len(qs)} query chunks: mean {overlap.mean():.4f}, min {overlap.min():.1f}")

    # 3. SQuAD answer-in-top-k
    norm_corpus = [f" {normalize(t)} " for t in corpus]
    ks = (1, 5, 20)
    squad_res: dict[str, dict[str, float]] = {}
    for label in ("reference", "candidate"):
        nn = topk(vec[label]["questions"], vec[label]["corpus"], max(ks))
        hits = {k: 0 for k in ks}
        for row, ans in zip(nn, answers, strict=True):
            first = next((r for r, ci in enumerate(row) if any(f" {x} " in norm_corpus[ci] for x in ans)), None)
            for k in ks:
                hits[k] += first is not None and first < k
        squad_res[label] = {f"top{k}": 100.0 * hits[k] / len(answers) for k in ks}
    for k in ks:
        r, c = squad_res["reference"][f"top{k}"], squad_res["candidate"][f"top{k}"]
        print(f"SQuAD answer-in-top-{k}: reference {r:.1f}%, candidate {c:.1f}% (difference {c - r:+.1f} points)")

    goals = {
        "cosine_mean_ge_0.99": agree["mean"] >= 0.99,
        "overlap_ge_0.9": float(overlap.mean()) >= 0.9,
        "squad_within_1_point": all(
            abs(squad_res["candidate"][f"top{k}"] - squad_res["reference"][f"top{k}"]) <= 1.0 for k in ks
        ),
    }
    print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()))
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    result = {
        "command": command, "machine": mach, "load_average_start": load0, "load_average_end": load1,
        "reference": {"name": ref.name, "fingerprint": ref.fingerprint},
        "candidate": {"name": cand.name, "fingerprint": cand.fingerprint},
        "corpus_chunks": len(corpus), "wiki_chunks": len(wiki_chunks), "squad_chunks": len(sq_chunks),
        "questions": len(questions), "cosine": agree, "overlap_top10": float(overlap.mean()),
        "squad": squad_res, "goals": goals, "timing": timing,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
