"""What retrieval-based LMs do with a store: RETRO sequences (:mod:`.retro`),
the MassiveDS post-hoc pipeline (:mod:`.pipeline`) and prompts (:mod:`.prompting`)."""

from . import pipeline, prompting, retro

__all__ = ["retro", "pipeline", "prompting"]
