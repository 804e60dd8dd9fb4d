"""What retrieval-based LMs do with a store: RETRO sequences (:mod:`.retro`) and
training neighbours for a whole corpus (:mod:`.corpus`),
the MassiveDS post-hoc pipeline (:mod:`.pipeline`), prompts (:mod:`.prompting`)
and In-Context RALM perplexity with a real LM (:mod:`.ralm`; the optional
transformers GGUF LM is in :mod:`.lm_gguf`, imported on demand)."""

from . import corpus, pipeline, prompting, ralm, retro

__all__ = ["retro", "corpus", "pipeline", "prompting", "ralm"]
