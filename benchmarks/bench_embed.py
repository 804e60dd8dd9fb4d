"""Speed of the default embedder (numpy all-MiniLM-L6-v2) on 64-token Wikipedia chunks.

    python benchmarks/bench_embed.py [--chunks 2000] [--repeat 1] [--out .cache/bench/embed.json] [--workers N]
        [--no-st] [--no-int8] [--no-single-blas]

Chunks: the first documents of /work/shared/data/wiki/wiki-AA.jsonl.gz are
tokenized with the model's tokenizer (no special tokens, no truncation) and
cut into consecutive, non-overlapping 64-token windows; each chunk is the exact
substring of the document from its first token's start offset to its last
token's end offset (what the store embeds with chunk_tokens=64). Re-tokenized
with [CLS] and [SEP], a chunk is 64-67 tokens.

Reported:

- chunks/s of ``MiniLM.encode`` over all chunks in one call (best of --repeat);
- the encoder's achieved GFLOP/s, counting only the matmuls, per sequence of
  L tokens (after truncation), hidden size d, FFN size f, n layers:

      FLOPs = n * (2*L*d*3d      Q, K, V projections
                   + 2*L*L*d     attention scores  (all heads: L*L*head_dim each)
                   + 2*L*L*d     attention-weighted values
                   + 2*L*d*d     output projection
                   + 2*L*d*f     FFN up
                   + 2*L*f*d)    FFN down
            = n * (2*L*d*(4d + 2f) + 4*L*L*d)

  i.e. 21.2 MFLOP per token + attention for MiniLM (d=384, f=1536, n=6);
  padding, embeddings, LayerNorm, GELU, softmax and pooling are not counted;
- the machine's float32 matmul GFLOP/s measured in the same run with numpy on
  the encoder's shapes ((4096x384)@(384x1536), (4096x1536)@(1536x384),
  (4096x384)@(384x1152)), best of several, measured before and after the
  encoder run (the best is used);
- the ratio encoder / matmul;
- unless --no-single-blas: the same again in a subprocess with
  OPENBLAS_NUM_THREADS=1, where MiniLM runs one batch per core in its own
  threads (see docs/embedders.md, "Threads, and shared machines");
- if torch and sentence-transformers are importable (and --no-st is not
  given): sentence-transformers on the CPU on the same chunks (batch_size 32,
  its default), its chunks/s, ragstore/sentence-transformers, and the lowest
  cosine between the two models' vectors;
- unless --no-int8, if the 'onnx' extra is installed: minilm-int8 (int8
  all-MiniLM-L6-v2 on onnxruntime, ragstore/embedders/onnx.py) on the same
  chunks, its chunks/s, int8 / numpy, and its cosine to the numpy vectors.

numpy, minilm-int8 and sentence-transformers run interleaved, --repeat rounds
of each in turn, and each reports its best round, so that a change of load
during the run hits them alike.

A JSON record of all of it goes to --out (default .cache/bench/embed.json).
The machine may be shared: the load average is printed before and after; the
numbers are only meaningful when it stays well below the core count.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragstore.embedders.minilm import MiniLM  # noqa: E402

WIKI = Path(os.environ.get("RAGSTORE_SHARED_DATA", "/work/shared/data")) / "wiki" / "wiki-AA.jsonl.gz"


def machine() -> dict:
    info: dict = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
        info["simd"] = [f for f in wanted if f in flags]
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()
        info["ram_gib"] = round(int(mem[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if blas.get(k)}
        simd = cfg.get("SIMD Extensions", {})
        info["numpy_simd_found"] = simd.get("found")
    except Exception as e:  # older numpy
        info["blas"] = f"unknown ({e})"
    info["env_threads"] = {
        k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
    }
    return info


def make_chunks(n: int, tokenizer_json: str, size: int = 64) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_truncation()
    tok.no_padding()
    out: list[str] = []
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            offs = tok.encode(text, add_special_tokens=False).offsets
            for s in range(0, len(offs) - size + 1, size):
                out.append(text[offs[s][0] : offs[s + size - 1][1]])
                if len(out) >= n:
                    return out
    return out


@dataclass(frozen=True)
class Architecture:
    d: int  # hidden size
    inter: int  # feed-forward size
    n_layers: int


def architecture(model: MiniLM) -> Architecture:
    """The encoder's shape, from the config.json of the model's folder."""
    cfg = json.loads((Path(model.path) / "config.json").read_text(encoding="utf-8"))
    return Architecture(int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"]))


def encoded_lengths(model: MiniLM, texts: list[str]) -> list[int]:
    """Tokens per text as the encoder sees them: with [CLS] and [SEP], cut at max_seq_length."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(model.tokenizer_json())
    tok.no_padding()
    tok.enable_truncation(max_length=model.max_seq_length)
    return [len(e.ids) for e in tok.encode_batch(texts)]


def encoder_flops(lengths: np.ndarray, d: int, f: int, n_layers: int) -> float:
    L = lengths.astype(np.float64)
    return float(n_layers * (2 * L * d * (4 * d + 2 * f) + 4 * L * L * d).sum())


def matmul_gflops(d: int, f: int, rows: int = 4096, reps: int = 5) -> float:
    rng = np.random.default_rng(0)
    best = 0.0
    for k, n in ((d, f), (f, d), (d, 3 * d)):
        a = rng.standard_normal((rows, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((rows, n), np.float32)
        np.matmul(a, b, out=c)
        for _ in range(reps):
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            dt = time.perf_counter() - t
            best = max(best, 2 * rows * k * n / dt / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=2000, help="number of 64-token chunks (default 2000)")
    ap.add_argument("--repeat", type=int, default=1, help="encoder runs; the best is reported (default 1)")
    ap.add_argument("--out", default=str(REPO / ".cache" / "bench" / "embed.json"), help="JSON result file")
    ap.add_argument("--workers", type=int, default=None, help="MiniLM(workers=N); default: MiniLM's own choice")
    ap.add_argument("--no-st", action="store_true", help="skip the sentence-transformers comparison")
    ap.add_argument("--no-int8", action="store_true", help="skip minilm-int8 (onnxruntime; the 'onnx' extra)")
    ap.add_argument(
        "--no-single-blas",
        action="store_true",
        help="skip the second measurement, in a subprocess with OPENBLAS_NUM_THREADS=1 "
        "(MiniLM then runs one batch per core)",
    )
    args = ap.parse_args()

    command = "python " + shlex.join([os.path.relpath(sys.argv[0], os.getcwd())] + sys.argv[1:])
    print(f"command: {command}")
    mach = machine()
    print(
        f"machine: {mach.get('cpu_model', '?')}, {mach['cpu_count']} cores ({mach['cpus_usable']} usable), "
        f"{mach.get('ram_gib', '?')} GiB RAM, SIMD {'/'.join(mach.get('simd', []))}"
    )
    print(f"numpy {mach['numpy']}, BLAS {mach['blas']}, thread env {mach['env_threads'] or 'unset'}")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    t = time.perf_counter()
    model = MiniLM(workers=args.workers)
    load_s = time.perf_counter() - t
    w = architecture(model)
    chunks = make_chunks(args.chunks, model.tokenizer_json())
    lengths = np.array(encoded_lengths(model, chunks))
    flops = encoder_flops(lengths, w.d, w.inter, w.n_layers)
    print(
        f"model: {model.name} ({model.path}), loaded in {load_s:.2f} s; {len(chunks)} chunks of 64 tokens "
        f"({lengths.min()}-{lengths.max()} with [CLS]/[SEP], {lengths.sum()} tokens, "
        f"{flops / len(chunks) / 1e9:.2f} GFLOP per chunk)"
    )

    # The candidates run interleaved, round after round, on the same chunks: on a shared
    # machine the load changes from minute to minute, and each takes its best round.
    runners: dict[str, Callable[[list[str]], np.ndarray]] = {"ragstore": model.encode}
    int8 = None
    if not args.no_int8:
        try:
            from ragstore.embedders.onnx import MiniLMInt8

            t = time.perf_counter()
            int8 = MiniLMInt8()
            int8_load_s = time.perf_counter() - t
        except Exception as e:  # the 'onnx' extra is optional
            print(f"minilm-int8 not measured ({type(e).__name__}: {e})")
        else:
            runners["int8"] = int8.encode
            print(f"minilm-int8: {int8.model_file} (built or loaded in {int8_load_s:.2f} s), "
                  f"{int8.workers} worker(s) x {int8.threads} onnxruntime intra-op threads")
    st = None
    if not args.no_st:
        try:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            print(f"sentence-transformers not measured ({e})")
        else:
            st = SentenceTransformer(str(model.path), device="cpu")  # the package's files: no download

            def st_encode(texts: list[str]) -> np.ndarray:
                return st.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)

            runners["st"] = st_encode

    mm_before = matmul_gflops(w.d, w.inter)
    for fn in runners.values():
        fn(chunks[:64])  # warm-up
    runs: dict[str, list[float]] = {k: [] for k in runners}
    loads: list[float] = []
    out_vecs: dict[str, np.ndarray] = {}
    for _ in range(max(1, args.repeat)):
        for key, fn in runners.items():
            t = time.perf_counter()
            out_vecs[key] = fn(chunks)
            runs[key].append(time.perf_counter() - t)
            loads.append(os.getloadavg()[0])
    vecs = out_vecs["ragstore"]
    times = runs["ragstore"]
    enc_s = min(times)
    mm_after = matmul_gflops(w.d, w.inter)
    mm = max(mm_before, mm_after)
    cps = len(chunks) / enc_s
    gf = flops / enc_s / 1e9
    print(f"load average during the runs: {min(loads):.2f}-{max(loads):.2f}")
    print(
        f"ragstore MiniLM ({model.workers} worker{'s' if model.workers > 1 else ''}): {cps:.1f} chunks/s "
        f"({enc_s:.2f} s for {len(chunks)}; runs {', '.join(f'{x:.2f}' for x in times)} s)"
    )
    print(f"encoder: {gf:.1f} GFLOP/s (matmul FLOPs only)")
    print(f"numpy float32 matmul: {mm:.1f} GFLOP/s (before {mm_before:.1f}, after {mm_after:.1f})")
    print(f"ratio encoder / matmul: {gf / mm:.2f}")

    result: dict = {
        "command": command,
        "machine": mach,
        "load_average_start": load0,
        "load_average_runs": [min(loads), max(loads)],
        "model": {"name": model.name, "path": str(model.path), "fingerprint": model.fingerprint, "load_s": load_s},
        "chunks": len(chunks),
        "tokens": int(lengths.sum()),
        "flops_per_chunk": flops / len(chunks),
        "ragstore": {"seconds": enc_s, "runs_s": times, "chunks_per_s": cps, "gflops": gf},
        "matmul_gflops": mm,
        "matmul_gflops_before_after": [mm_before, mm_after],
        "ratio_encoder_matmul": gf / mm,
        "workers": model.workers,
    }

    if int8 is not None:
        i8_s = min(runs["int8"])
        i8_cps = len(chunks) / i8_s
        cos = np.einsum("ij,ij->i", vecs, out_vecs["int8"])
        import onnxruntime

        print(
            f"minilm-int8 (onnxruntime {onnxruntime.__version__}, {int8.workers} worker(s) x {int8.threads} "
            f"threads): {i8_cps:.1f} chunks/s "
            f"({i8_s:.2f} s; runs {', '.join(f'{x:.2f}' for x in runs['int8'])} s); "
            f"int8 / numpy = {i8_cps / cps:.2f}x; cosine to numpy mean {cos.mean():.5f}, min {cos.min():.5f}"
        )
        result["int8"] = {
            "onnxruntime": onnxruntime.__version__,
            "threads": int8.threads,
            "workers": int8.workers,
            "seconds": i8_s,
            "runs_s": runs["int8"],
            "chunks_per_s": i8_cps,
            "ratio_int8_numpy": i8_cps / cps,
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
        }

    if st is not None:
        import torch

        st_s = min(runs["st"])
        ref = out_vecs["st"]
        cos = np.einsum("ij,ij->i", vecs, ref)
        st_cps = len(chunks) / st_s
        print(
            f"sentence-transformers (torch {torch.__version__}, {torch.get_num_threads()} threads, CPU): "
            f"{st_cps:.1f} chunks/s ({st_s:.2f} s, {flops / st_s / 1e9:.1f} GFLOP/s)"
        )
        print(f"ragstore / sentence-transformers: {cps / st_cps:.2f}; min cosine between them {cos.min():.7f}")
        if int8 is not None:
            print(f"minilm-int8 / sentence-transformers: {result['int8']['chunks_per_s'] / st_cps:.2f}")
        result["sentence_transformers"] = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "seconds": st_s,
            "runs_s": runs["st"],
            "chunks_per_s": st_cps,
            "gflops": flops / st_s / 1e9,
            "ratio_ragstore_st": cps / st_cps,
            "min_cosine": float(cos.min()),
        }

    if not args.no_single_blas and mach["cpus_usable"] and mach["cpus_usable"] > 1:
        sub_out = Path(args.out).with_suffix(".single-blas.json")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
        cmd = [sys.executable, __file__, "--chunks", str(args.chunks), "--repeat", str(args.repeat),
               "--no-st", "--no-single-blas", "--out", str(sub_out)]
        if args.no_int8:
            cmd.append("--no-int8")
        print("\n--- again with OPENBLAS_NUM_THREADS=1 (MiniLM and minilm-int8: a batch per core), in a subprocess ---")
        subprocess.run(cmd, env=env, check=True)
        sub = json.loads(sub_out.read_text())
        sub_cps = sub["ragstore"]["chunks_per_s"]
        sub_gf = sub["ragstore"]["gflops"]
        print("---")
        print(
            f"OPENBLAS_NUM_THREADS=1, {sub['workers']} workers: {sub_cps:.1f} chunks/s, {sub_gf:.1f} GFLOP/s = "
            f"{sub_gf / mm:.2f} of this run's multi-threaded matmul rate; {sub_cps / cps:.2f}x the default mode"
        )
        if "int8" in sub:
            print(
                f"OPENBLAS_NUM_THREADS=1, minilm-int8 one batch per core: {sub['int8']['chunks_per_s']:.1f} chunks/s, "
                f"{sub['int8']['ratio_int8_numpy']:.2f}x numpy in the same mode"
            )
        result["single_blas"] = {
            "workers": sub["workers"],
            "chunks_per_s": sub_cps,
            "gflops": sub_gf,
            "ratio_to_multithreaded_matmul": sub_gf / mm,
            "speedup_vs_default": sub_cps / cps,
            "single_thread_matmul_gflops": sub["matmul_gflops"],
            "int8": sub.get("int8"),
        }

    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    result["load_average_end"] = load1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
