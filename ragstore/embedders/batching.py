"""Input checks and length-sorted batches shared by the MiniLM embedders (numpy and int8)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError

__all__ = ["check_texts", "length_batches"]


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of str, or InvalidInputError naming the first bad one."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError("encode() takes a list of strings, not a single string: wrap it in a list")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"text {i} is a {type(t).__name__}, not a str")
    return texts


def length_batches(
    lens: np.ndarray, *, max_batch_size: int, max_batch_tokens: int, workers: int = 1
) -> list[np.ndarray]:
    """Index arrays of texts to encode together, by increasing token length.

    Sorted by length, so each batch pads to its own longest sequence only;
    a batch holds at most ``max_batch_size`` texts and ``max_batch_tokens``
    padded tokens. With several workers the token budget shrinks so that
    there are enough batches to keep every worker busy.
    """
    n = len(lens)
    order = np.argsort(lens, kind="stable")
    max_tokens = max_batch_tokens
    if workers > 1:
        max_tokens = max(256, min(max_tokens, -(-int(lens.sum()) // workers)))
    batches = []
    i = 0
    while i < n:
        # the batch is the sorted run starting at i: its last sequence is the longest
        j = i + 1
        while j < n and j - i < max_batch_size and (j - i + 1) * lens[order[j]] <= max_tokens:
            j += 1
        batches.append(order[i:j])
        i = j
    return batches

