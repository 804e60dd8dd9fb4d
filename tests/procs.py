"""Child processes for the crash and multi-process tests.

    python tests/procs.py writer STORE PREFIX N [--delete-every K] [--checkpoint-every C]
        adds N real documents (ids PREFIX-i), printing "ACK id" after each add
        returns and "DEL id" after each delete returns; a parent kills it at will.
    python tests/procs.py reader STORE
        answers stdin lines ["id", "text"] (JSON) with "OK" / "MISS ..." after querying,
        and checks every hit it sees is whole (text, continuation, offsets).
    python tests/procs.py lock STORE TIMEOUT
        tries to write; prints the error class it got.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ragstore  # noqa: E402
from helpers import HashEmbedder, wiki_docs  # noqa: E402


def doc_text(prefix: str, i: int, docs: list[dict]) -> str:
    # Real text, made unique per document so its exact query can only find it.
    d = docs[i % len(docs)]
    return f"unique marker {prefix} {i} " + d["text"][: 400 + (i * 37) % 1500]


def writer(path: str, prefix: str, n: int, delete_every: int, checkpoint_every: int, compact_every: int) -> None:
    docs = wiki_docs(200)
    store = ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=32, checkpoint_every=checkpoint_every)
    i = 0
    while i < n:
        if i % 7 == 3:  # a batch through add_many
            batch = [
                ragstore.Doc(f"{prefix}-{j}", doc_text(prefix, j, docs), source=("a", "b")[j % 2])
                for j in range(i, i + 5)
            ]
            store.add_many(batch, batch_size=40)
            for d in batch:
                print("ACK", d.id, flush=True)
            i += 5
        else:
            store.add(f"{prefix}-{i}", doc_text(prefix, i, docs), source=("a", "b")[i % 2], meta={"i": i})
            print("ACK", f"{prefix}-{i}", flush=True)
            i += 1
        if delete_every and i % delete_every == 0:
            victim = f"{prefix}-{i - 2}"
            if victim in store:
                print("DELETING", victim, flush=True)  # in flight: may or may not be gone after a kill
                store.delete(victim)
                print("DEL", victim, flush=True)
        if compact_every and i % compact_every == 0:
            store.compact()  # rewrites the LMDB file and rebuilds the index: kill it midway too
    store.close()
    print("DONE", flush=True)


def reader(path: str) -> None:
    store = ragstore.open(path, readonly=True, embedder=HashEmbedder())
    print("READY", flush=True)
    for line in sys.stdin:
        doc_id, text = json.loads(line)
        hits = store.query(text, k=3)
        for h in hits:  # a torn result would show a hit whose parts disagree
            c = store.get_chunk(h.chunk_id)
            assert (c.text, c.continuation, c.start, c.end) == (h.text, h.continuation, h.start, h.end)
        if hits and hits[0].doc_id == doc_id and hits[0].text == text:
            print("OK", flush=True)
        else:
            print("MISS", doc_id, [(h.doc_id, round(h.score, 3)) for h in hits], flush=True)
    store.close()


def lock(path: str, timeout: float) -> None:
    try:
        with ragstore.open(path, embedder=HashEmbedder(), lock_timeout=timeout) as s:
            t = time.monotonic()
            s.add("from-second-writer", "a second writer's document")
            print("WROTE", round(time.monotonic() - t, 2), flush=True)
    except ragstore.RagstoreError as e:
        print(type(e).__name__, e, flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "writer":
        args = sys.argv[2:]
        opts = {"--delete-every": 0, "--checkpoint-every": 100_000, "--compact-every": 0}
        for k in list(opts):
            if k in args:
                j = args.index(k)
                opts[k] = int(args[j + 1])
                del args[j : j + 2]
        writer(
            args[0], args[1], int(args[2]), opts["--delete-every"], opts["--checkpoint-every"], opts["--compact-every"]
        )
    elif role == "reader":
        reader(sys.argv[2])
    elif role == "lock":
        lock(sys.argv[2], float(sys.argv[3]))
