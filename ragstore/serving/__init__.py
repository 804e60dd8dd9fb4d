"""Doors for local LLM apps (optional extras): HTTP (:mod:`.http`, the
``server`` extra), MCP (:mod:`.mcp`, the ``mcp`` extra) and a LangChain
``VectorStore`` (:mod:`.langchain`, the ``langchain`` extra). Import the
submodule you need; this package imports none of them."""
