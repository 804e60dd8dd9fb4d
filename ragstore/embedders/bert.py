"""The numpy BERT encoder behind :class:`~ragstore.embedders.minilm.MiniLM`: the math.

``_Weights`` reads a sentence-transformers BERT folder (config.json,
model.safetensors, tokenizer.json, pooling config) into float32 arrays laid
out for the forward pass (fused Q|K|V with the mask and softmax denominators
folded in, see the comments), and runs that pass: LayerNorm, attention, the
feed-forward block with GELU (:func:`gelu`, an erf GELU without erf), pooling
and L2 normalization. How the weights are found, cached, fingerprinted and
batched across threads is :mod:`.minilm`'s business.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import EmbedderNotAvailableError

__all__ = ["gelu"]

# --------------------------------------------------------------------------
# GELU
# --------------------------------------------------------------------------

# GELU(x) = x * Phi(x) = x * sigmoid(g(x)) = 0.5 * x * (1 + tanh(g(x) / 2))
# with g = logit(Phi). g is odd and smooth; on [-6, 6] it is fitted (weighted
# minimax, Lawson iterations in float64 against math.erfc) by x * P(x^2), P of
# degree 6. The weight is the sensitivity of GELU to an error in g,
# x * Phi * (1 - Phi), so the fit error is GELU's absolute error: <= 7.4e-8 in
# exact arithmetic. The float32 evaluation adds rounding: measured over
# [-12, 12], the error is at most 1.4e-7 * max(1, |x|) (torch's float32 erf
# GELU is itself good to about 1 ulp). Beyond |x| = 6 the polynomial is left
# alone: x * P(x^2) keeps growing in magnitude (|g(6)| = 24, |g(7)| = 88, then
# overflow to inf), so tanh saturates to +-1 there just as Phi saturates to 1 or
# 0 in float32; no clamp is needed (np.minimum costs as much as 4 multiplies).
# 17 vectorized passes in all; numpy has no erf.
#
# The activations below compute 2 * act(x): the 0.5 is folded into the weights
# of the FFN's output matmul (an exact scaling), saving a pass.
_GELU_HALF_G = tuple(
    np.float32(c / 2)  # coefficients of g(x) / (2x) in powers of x^2, highest first (Horner order)
    for c in (
        3.66913293e-09,
        -2.69468785e-07,
        7.97994117e-06,
        -1.10787890e-04,
        -6.52080649e-05,
        7.26670691e-02,
        1.59576906e00,
    )
)
_ONE = np.float32(1.0)


def _gelu_erf_x2(x: np.ndarray, u: np.ndarray, p: np.ndarray) -> None:
    """In place ``x = 2 * GELU(x)`` (exact, erf GELU) of float32 ``x``; ``u``, ``p``: scratch of x's shape."""
    c = _GELU_HALF_G
    np.multiply(x, x, out=u)
    np.multiply(u, c[0], out=p)
    p += c[1]
    for a in c[2:]:
        p *= u
        p += a
    p *= x  # p = g(x) / 2  (+-inf for |x| > ~1e3: harmless, tanh gives +-1)
    np.tanh(p, out=p)
    p += _ONE
    x *= p


def _gelu_tanh_x2(x: np.ndarray, u: np.ndarray, p: np.ndarray) -> None:
    """In place ``x = 2 * GELU_tanh(x)`` ("gelu_new", "gelu_pytorch_tanh")."""
    np.multiply(x, x, out=u)
    u *= np.float32(0.044715)
    u += _ONE
    u *= x
    u *= np.float32(np.sqrt(2.0 / np.pi))
    np.tanh(u, out=u)
    u += _ONE
    x *= u


def _relu(x: np.ndarray, u: np.ndarray, p: np.ndarray) -> None:
    np.maximum(x, np.float32(0.0), out=x)


# name -> (in-place function, factor its result carries: folded into the next weights)
_ACTIVATIONS = {
    "gelu": (_gelu_erf_x2, 2.0),
    "gelu_python": (_gelu_erf_x2, 2.0),
    "gelu_new": (_gelu_tanh_x2, 2.0),
    "gelu_pytorch_tanh": (_gelu_tanh_x2, 2.0),
    "gelu_fast": (_gelu_tanh_x2, 2.0),
    "relu": (_relu, 1.0),
}


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU of an array, as float32 (a new array)."""
    out = np.array(x, dtype=np.float32, copy=True)
    with np.errstate(over="ignore", invalid="ignore"):
        _gelu_erf_x2(out, np.empty_like(out), np.empty_like(out))
    out *= np.float32(0.5)
    return out


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


class _Layer:
    __slots__ = ("wqkv", "bqkv", "wo", "bo", "ln1_g", "ln1_b", "w1", "b1", "w2", "b2", "ln2_g", "ln2_b")
    # declared for the type checker (slots alone declare no types); _Weights sets them all
    wqkv: np.ndarray
    bqkv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


class _Weights:
    """Immutable prepared weights, shared by every MiniLM on the same folder."""

    #: rows per feed-forward block: the (rows, intermediate) activations stay in cache
    ffn_rows = 512
    #: attention sub-batches hold at most this many scores (2 MB)
    score_elems = 1 << 19
    #: softmax without the row-maximum pass (checked; see _forward); False: always the classic way
    fast_softmax = True

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model_type = cfg.get("model_type", "bert")
        if model_type != "bert":
            raise EmbedderNotAvailableError(
                f"{folder}: model_type {model_type!r} is not supported by the numpy encoder "
                "(only BERT-family models are); use the 'sentence-transformers:' or 'onnx:' embedder"
            )
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise EmbedderNotAvailableError(
                f"{folder}: position_embedding_type {cfg['position_embedding_type']!r} is not supported; "
                "use the 'sentence-transformers:' embedder"
            )
        act = cfg.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise EmbedderNotAvailableError(
                f"{folder}: hidden_act {act!r} is not supported (known: {', '.join(sorted(_ACTIVATIONS))}); "
                "use the 'sentence-transformers:' embedder"
            )
        self.act, act_factor = _ACTIVATIONS[act]
        self.d = d = int(cfg["hidden_size"])
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = h = int(cfg["num_attention_heads"])
        if d % h:
            raise EmbedderNotAvailableError(f"{folder}: hidden_size {d} is not a multiple of {h} heads")
        self.head_dim = d // h
        self.inter = int(cfg["intermediate_size"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.eps32 = np.float32(self.eps)
        self.inv_d = np.full((d, 1), 1.0 / d, np.float32)

        max_pos = int(cfg.get("max_position_embeddings", 512))
        max_len = max_pos
        st_cfg = folder / "sentence_bert_config.json"
        if st_cfg.is_file():
            st = json.loads(st_cfg.read_text(encoding="utf-8"))
            if st.get("max_seq_length"):
                max_len = min(int(st["max_seq_length"]), max_pos)
        self.max_len = max_len
        self.pooling = "mean"
        pool_cfg = folder / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            pc = json.loads(pool_cfg.read_text(encoding="utf-8"))
            if pc.get("pooling_mode_cls_token") and not pc.get("pooling_mode_mean_tokens"):
                self.pooling = "cls"
            elif not pc.get("pooling_mode_mean_tokens", True) or pc.get("pooling_mode_max_tokens") or pc.get(
                "pooling_mode_mean_sqrt_len_tokens"
            ):
                raise EmbedderNotAvailableError(
                    f"{pool_cfg}: only mean or CLS pooling is supported; use the 'sentence-transformers:' embedder"
                )

        self.tokenizer_text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        tok = Tokenizer.from_str(self.tokenizer_text)
        tok.no_padding()
        tok.enable_truncation(max_length=max_len)  # counts [CLS] and [SEP], as transformers does
        self.tokenizer = tok

        w = load_file(str(folder / "model.safetensors"))
        if not any(k.startswith("embeddings.") for k in w) and any(k.startswith("bert.") for k in w):
            w = {k[5:]: v for k, v in w.items() if k.startswith("bert.")}

        def get(name: str) -> np.ndarray:
            try:
                return np.asarray(w[name], dtype=np.float32)
            except KeyError:
                raise EmbedderNotAvailableError(
                    f"{folder / 'model.safetensors'} has no tensor {name!r}: not a BERT model"
                ) from None

        f32 = np.float32
        self.word = np.ascontiguousarray(get("embeddings.word_embeddings.weight"))
        tt = w.get("embeddings.token_type_embeddings.weight")
        pos = get("embeddings.position_embeddings.weight")[:max_len]
        # token type 0 everywhere: fold it into the position table
        self.pos = np.ascontiguousarray(pos + (tt[0].astype(f32) if tt is not None else 0), dtype=f32)
        self.emb_g = get("embeddings.LayerNorm.weight")
        self.emb_b = get("embeddings.LayerNorm.bias")
        scale = f32(1.0 / np.sqrt(self.head_dim))
        hd, hd1 = self.head_dim, self.head_dim + 1
        self.layers = []
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            L = _Layer()
            # Fused Q|K|V projection, (d, 3 * H * (hd + 1)): each head gets one
            # extra output column, constant (zero weights): 1 for Q, 0 for K
            # (overwritten with the padding mask, -1e9, when a batch is padded)
            # and 1 for V. Then Q'.K' = q.k + mask folds the mask into the score
            # matmul, and the last column of softmax-numerator @ V' is the
            # softmax denominator: no separate pass over the (L, L) scores for
            # either. torch's Linear is x @ W.T + b, so W.T is stored.
            wqkv = np.zeros((d, 3, h, hd1), f32)
            bqkv = np.zeros((3, h, hd1), f32)
            for s, name in enumerate(("query", "key", "value")):
                wt = get(p + f"attention.self.{name}.weight").T.reshape(d, h, hd)
                bt = get(p + f"attention.self.{name}.bias").reshape(h, hd)
                if s == 0:
                    wt, bt = wt * scale, bt * scale
                wqkv[:, s, :, :hd] = wt
                bqkv[s, :, :hd] = bt
            bqkv[0, :, hd] = 1.0
            bqkv[2, :, hd] = 1.0
            L.wqkv = np.ascontiguousarray(wqkv.reshape(d, 3 * h * hd1))
            L.bqkv = bqkv.reshape(-1)
            L.wo = np.ascontiguousarray(get(p + "attention.output.dense.weight").T)
            L.bo = get(p + "attention.output.dense.bias")
            L.ln1_g = get(p + "attention.output.LayerNorm.weight")
            L.ln1_b = get(p + "attention.output.LayerNorm.bias")
            L.w1 = np.ascontiguousarray(get(p + "intermediate.dense.weight").T)
            L.b1 = get(p + "intermediate.dense.bias")
            L.w2 = np.ascontiguousarray(get(p + "output.dense.weight").T / f32(act_factor))
            L.b2 = get(p + "output.dense.bias")
            L.ln2_g = get(p + "output.LayerNorm.weight")
            L.ln2_b = get(p + "output.LayerNorm.bias")
            self.layers.append(L)

    # ---------------------------------------------------------------- forward

    def _layer_norm(self, x: np.ndarray, g: np.ndarray, b: np.ndarray, tmp: np.ndarray) -> None:
        """In place LayerNorm over the last axis of 2-D ``x``; ``tmp`` is scratch of x's shape.

        The two row reductions are matrix-vector products with a column of
        1/d (BLAS), 25% faster than ``sum(axis=1)``.
        """
        mean = x @ self.inv_d  # (T, 1)
        x -= mean
        np.multiply(x, x, out=tmp)
        var = tmp @ self.inv_d
        var += self.eps32
        np.sqrt(var, out=var)
        np.divide(np.float32(1.0), var, out=var)
        x *= var
        x *= g
        x += b

    def forward(self, ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Pooled, L2-normalized vectors of a right-padded batch ``ids`` (B, L) with true lengths ``lens``."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected (softmax) or harmless (GELU)
            return self._forward(ids, lens)

    def _forward(self, ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        B, L = ids.shape
        d, H, hd, inter = self.d, self.n_heads, self.head_dim, self.inter
        hd1 = hd + 1
        T = B * L
        f32 = np.float32
        padded = bool((lens != L).any())

        # work buffers, allocated once per batch and reused by every layer
        x = np.take(self.word, ids.reshape(-1), axis=0)  # (T, d)
        x.reshape(B, L, d)[...] += self.pos[:L]
        tmp = np.empty((T, d), f32)
        qkv = np.empty((T, 3 * H * hd1), f32)
        ctx = np.empty((B, L, H, hd), f32)
        rows = min(T, self.ffn_rows)
        h = np.empty((rows, inter), f32)
        u = np.empty((rows, inter), f32)
        p = np.empty((rows, inter), f32)
        # attention sub-batches: keep the (b, H, L, L) scores within ~2 MB
        sb = max(1, min(B, self.score_elems // (H * L * L)))
        scores = np.empty((sb, H, L, L), f32)
        cbuf = np.empty((sb, H, L, hd1), f32)
        if padded:
            valid = np.arange(L)[None, :] < lens[:, None]  # (B, L)
            neg = np.where(valid, f32(0.0), f32(-1e9)).astype(f32)[:, :, None]  # (B, L, 1)

        self._layer_norm(x, self.emb_g, self.emb_b, tmp)
        q5 = qkv.reshape(B, L, 3, H, hd1)
        fast = self.fast_softmax
        for lyr in self.layers:
            # ---- self-attention
            np.matmul(x, lyr.wqkv, out=qkv)
            qkv += lyr.bqkv
            if padded:
                q5[:, :, 1, :, hd] = neg
            for b0 in range(0, B, sb):
                b1 = min(B, b0 + sb)
                n = b1 - b0
                Q = q5[b0:b1, :, 0].transpose(0, 2, 1, 3)  # (n, H, L, hd1) views
                K = q5[b0:b1, :, 1].transpose(0, 2, 3, 1)  # (n, H, hd1, L)
                V = q5[b0:b1, :, 2].transpose(0, 2, 1, 3)  # (n, H, L, hd1)
                S, C = scores[:n], cbuf[:n]
                np.matmul(Q, K, out=S)
                # Fast path: exp without subtracting the row maximum. The
                # softmax is shift-invariant, so this is exact unless exp
                # overflows (a score > 88) or a whole row underflows; both show
                # in the denominators, and then the sub-batch is redone the
                # classic way.
                den = C[..., hd:]  # softmax denominators (last column of V' is 1)
                ok = False
                if fast:
                    np.exp(S, out=S)
                    np.matmul(S, V, out=C)
                    ok = bool(den.min() > 1e-30 and den.max() < 1e30)
                    if not ok:
                        np.matmul(Q, K, out=S)
                if not ok:
                    S -= S.max(axis=3, keepdims=True)
                    np.exp(S, out=S)
                    np.matmul(S, V, out=C)
                np.divide(C[..., :hd], den, out=ctx[b0:b1].transpose(0, 2, 1, 3))
            np.matmul(ctx.reshape(T, d), lyr.wo, out=tmp)
            tmp += lyr.bo
            x += tmp
            self._layer_norm(x, lyr.ln1_g, lyr.ln1_b, tmp)
            # ---- feed-forward, in row blocks so the intermediate stays in cache
            for r0 in range(0, T, rows):
                r1 = min(T, r0 + rows)
                hb, ub, pb = h[: r1 - r0], u[: r1 - r0], p[: r1 - r0]
                np.matmul(x[r0:r1], lyr.w1, out=hb)
                hb += lyr.b1
                self.act(hb, ub, pb)
                np.matmul(hb, lyr.w2, out=tmp[r0:r1])
            tmp += lyr.b2
            x += tmp
            self._layer_norm(x, lyr.ln2_g, lyr.ln2_b, tmp)

        # ---- pooling
        x3 = x.reshape(B, L, d)
        if self.pooling == "cls":
            out = np.array(x3[:, 0, :])
        elif padded:
            w = valid.astype(f32) / lens[:, None].astype(f32)
            out = np.matmul(w[:, None, :], x3).reshape(B, d)
        else:
            out = x3.mean(axis=1, dtype=f32)
        norm = np.sqrt(np.einsum("ij,ij->i", out, out))
        np.maximum(norm, f32(1e-12), out=norm)
        out /= norm[:, None]
        return out
