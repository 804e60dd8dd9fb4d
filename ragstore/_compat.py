"""Module names of ragstore 0.1, kept importable after the package was split.

``import ragstore.retro`` (and the others below) give the module at its new
place; nothing is loaded before it is asked for, so ``ragstore.server`` still
needs the ``server`` extra only when imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

OLD_NAMES = {
    "ragstore.embed": "ragstore.embedders.base",
    "ragstore.minilm": "ragstore.embedders.minilm",
    "ragstore.chunking": "ragstore.engine.chunking",
    "ragstore.retro": "ragstore.retrieval.retro",
    "ragstore.pipeline": "ragstore.retrieval.pipeline",
    "ragstore.prompting": "ragstore.retrieval.prompting",
    "ragstore.server": "ragstore.serving.http",
    "ragstore.mcp_server": "ragstore.serving.mcp",
    "ragstore.integrations": "ragstore.serving",
    "ragstore.integrations.langchain": "ragstore.serving.langchain",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the target module ran when it was imported


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = OLD_NAMES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
