"""Doors for local LLM apps (optional extras): HTTP (:mod:`.http`, the
``server`` extra), MCP (:mod:`.mcp`, the ``mcp`` extra), and the framework
doors: LangChain (:mod:`.langchain`), Haystack (:mod:`.haystack`) and
LlamaIndex (:mod:`.llamaindex`), each with the extra of its name. Import the
submodule you need; this package imports none of them."""
