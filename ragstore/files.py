"""Documents from files as people have them: plain text, Markdown, HTML and PDF.

:func:`ingest_files` adds a folder (searched recursively) or a list of files
to a store, one document per file:

- the document id is the file's path relative to the folder it was found
  under (``/``-separated), or its name when the file itself was given;
- ``meta`` holds the file's metadata: ``path`` (absolute), ``size`` (bytes),
  ``mtime`` (seconds since the epoch), ``type`` (``text``, ``markdown``,
  ``html``, ``pdf``), ``sha256`` (of the file's bytes) and ``title`` where the
  file has one (a Markdown ``# heading``, an HTML ``<title>``/``og:title``, a
  PDF's Title);
- run again, it skips a file whose size and mtime are those stored, or whose
  bytes hash to the stored ``sha256`` (touched, not changed), when the source
  is the stored one too, and replaces a changed one: a folder is kept in step by running the same call again.

Text extraction (see docs/cli.md, "Files"):

- ``.txt`` / ``.md`` / ``.markdown``: UTF-8 text as it is (a BOM dropped);
- ``.html`` / ``.htm``: the main text, without navigation, headers, footers,
  cookie banners and other boilerplate, by **trafilatura** (with its
  jusText/readability fallbacks);
- ``.pdf``: the text layer, page by page, by **pypdfium2** (PDFium, Chrome's
  PDF engine). A PDF without one (a scan) is an error: OCR it first.

HTML and PDF need the ``files`` extra (``pip install 'ragstore[files]'``);
without it those files raise :class:`MissingExtraError` (an ImportError)
naming it. Text and Markdown need nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError, NotFoundError
from .types import Doc, IngestSummary

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "FILE_TYPES",
    "FileText",
    "FileFormatError",
    "MissingExtraError",
    "extract_text",
    "file_doc",
    "find_files",
    "ingest_files",
    "needs_extra",
    "stored_file_meta",
    "Stored",
]

# suffix -> type (the value of meta["type"])
FILE_TYPES: dict[str, str] = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
_EXTRA_MODULE = {"html": "trafilatura", "pdf": "pypdfium2"}
_EXTRA_HINT = "pip install 'ragstore[files]'"


class MissingExtraError(ImportError):
    """An HTML or PDF file met without the ``files`` extra installed."""


class FileFormatError(ValueError):
    """A file whose text cannot be had: not UTF-8, a damaged PDF, a PDF without a text layer."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class FileText:
    """What a file says: its text and, where it has one, its title."""

    text: str
    title: str | None = None


def file_type(name: str) -> str | None:
    """``meta["type"]`` of a file name (None: not a file this module reads)."""
    return FILE_TYPES.get(os.path.splitext(name)[1].lower())


def needs_extra(kind: str) -> None:
    """Raise :class:`MissingExtraError` when files of type ``kind`` cannot be read here."""
    module = _EXTRA_MODULE.get(kind)
    if module is None:
        return
    try:
        __import__(module)
    except ImportError as e:
        raise MissingExtraError(
            f"reading .{kind} files needs the 'files' extra ({e.name} is missing): {_EXTRA_HINT}"
        ) from None


# ---------------------------------------------------------------------- extraction
def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(f"not valid UTF-8 (byte {e.start})", line=data.count(b"\n", 0, e.start) + 1) from None
    return text[1:] if text.startswith("\ufeff") else text


_MD_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_MD_FRONT_TITLE = re.compile(r"\A---\s*\n(?:.*\n)*?title:\s*[\"']?(.+?)[\"']?\s*\n(?:.*\n)*?---\s*\n")


def _markdown_title(text: str) -> str | None:
    m = _MD_FRONT_TITLE.match(text) or _MD_HEADING.search(text)
    return m.group(1).strip() or None if m else None


def _html(data: bytes) -> FileText:
    needs_extra("html")
    import trafilatura

    # trafilatura finds the encoding of bytes itself (meta charset, then detection)
    doc: Any = trafilatura.bare_extraction(
        data, with_metadata=True, include_comments=False, include_tables=True, include_links=False,
    )
    text = getattr(doc, "text", None) if doc is not None else None
    title = getattr(doc, "title", None) if doc is not None else None
    if not text:
        # a page too small or too odd for a main-content guess: all its visible text
        text = trafilatura.html2txt(data) or ""
    if title is None:
        meta = trafilatura.extract_metadata(data)
        title = getattr(meta, "title", None) if meta is not None else None
    return FileText(text.strip(), title or None)


def _pdf(data: bytes) -> FileText:
    needs_extra("pdf")
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise FileFormatError(f"not a readable PDF ({e})") from None
    try:
        pages = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            try:
                pages.append(textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n").strip())
            finally:
                textpage.close()
                page.close()
        title = (pdf.get_metadata_dict().get("Title") or "").strip() or None
    finally:
        pdf.close()
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise FileFormatError(f"no text layer in its {len(pages)} page(s) (a scan? run OCR on it first)")
    return FileText(text, title)


def extract_text(name: str, data: bytes) -> FileText:
    """The text (and title) of a file called ``name`` with the bytes ``data``.

    Raises :class:`FileFormatError` when there is none to be had and
    :class:`MissingExtraError` when the ``files`` extra is needed.
    """
    kind = file_type(name)
    if kind == "html":
        return _html(data)
    if kind == "pdf":
        return _pdf(data)
    if kind is None:
        raise FileFormatError(f"unsupported file type; expected one of {', '.join(FILE_TYPES)}")
    text = _decode(data)
    return FileText(text, _markdown_title(text) if kind == "markdown" else None)


# ---------------------------------------------------------------------- files and the store
def find_files(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """(file, document id) for each file of ``paths``; folders are searched recursively.

    Hidden files and folders are skipped, files of other types too (in a
    folder; given by name they are an error), in sorted order.
    """
    out: list[tuple[Path, str]] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and file_type(name) is not None:
                        f = Path(root) / name
                        out.append((f, f.relative_to(p).as_posix()))
        elif p.is_file():
            if file_type(p.name) is None:
                raise FileFormatError(f"{p}: unsupported file type; expected one of {', '.join(FILE_TYPES)}")
            out.append((p, p.name))
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


@dataclass(frozen=True)
class Stored:
    """What a store holds of a document that came from a file: its source and meta."""

    source: str | None
    meta: Mapping[str, Any]


def stored_file_meta(store: Store, doc_ids: Iterable[str]) -> dict[str, Stored]:
    """The source and meta stored with each of ``doc_ids`` that is in ``store`` (read before a write starts)."""
    out: dict[str, Stored] = {}
    for doc_id in doc_ids:
        try:
            d = store.get(doc_id)
        except (NotFoundError, InvalidInputError):
            continue
        if d.meta is not None:
            out[doc_id] = Stored(d.source, d.meta)
    return out


def _same_stat(meta: Mapping[str, Any], st: os.stat_result) -> bool:
    return meta.get("size") == st.st_size and meta.get("mtime") == st.st_mtime


def file_doc(
    path: Path,
    doc_id: str,
    *,
    source: str | None = None,
    previous: Stored | None = None,
    data: bytes | None = None,
) -> Doc | None:
    """The document of the file at ``path``, or None when ``previous`` (what
    the store holds under ``doc_id``) shows it unchanged: the same source, and
    the same size and mtime or the same bytes (sha256).

    Raises OSError (cannot read), :class:`FileFormatError` and :class:`MissingExtraError`.
    """
    st = path.stat()
    same_source = previous is not None and previous.source == source
    if previous is not None and same_source and _same_stat(previous.meta, st):
        return None
    if data is None:
        data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if previous is not None and same_source and previous.meta.get("sha256") == sha:
        return None
    ft = extract_text(path.name, data)
    meta: dict[str, Any] = {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "type": file_type(path.name),
        "sha256": sha,
    }
    if ft.title:
        meta["title"] = ft.title
    return Doc(id=doc_id, text=ft.text, source=source, meta=meta)


def ingest_files(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    *,
    source: str | None = None,
    batch_size: int = 256,
    on_progress: Callable[[Any], None] | None = None,
    on_error: Callable[[Path, Exception], None] | None = None,
) -> IngestSummary:
    """Add the files of ``paths`` (folders searched recursively) to ``store``, one document each.

    Unchanged files (see :func:`file_doc`) are counted as ``unchanged``
    without being read again; changed ones are replaced. A file that cannot
    be read or has no text (and a document the store refuses, such as an
    empty one) goes to ``on_error(path, error)`` and is skipped; without
    ``on_error`` the first one raises (after the documents before it are
    committed). A missing ``files`` extra raises :class:`MissingExtraError`
    before anything is read.
    """
    files = find_files(paths)
    for kind in sorted({file_type(p.name) or "" for p, _ in files}):
        needs_extra(kind)
    previous = stored_file_meta(store, (doc_id for _, doc_id in files))
    skipped_unchanged = 0
    failed = 0
    yielded: list[Path] = []

    def docs() -> Iterator[Doc]:
        nonlocal skipped_unchanged, failed
        for path, doc_id in files:
            try:
                doc = file_doc(path, doc_id, source=source, previous=previous.get(doc_id))
            except (OSError, FileFormatError) as e:
                if on_error is None:
                    raise
                failed += 1
                on_error(path, e)
                continue
            if doc is None:
                skipped_unchanged += 1
                continue
            yielded.append(path)
            yield doc

    def on_invalid(index: int, doc_id: str | None, error: Exception) -> None:
        assert on_error is not None
        on_error(yielded[index], error)

    summary = store.add_many(docs(), replace=True, batch_size=batch_size, on_progress=on_progress,
                             on_invalid=on_invalid if on_error is not None else None)
    return replace(summary, documents=summary.documents + skipped_unchanged + failed,
                   unchanged=summary.unchanged + skipped_unchanged, skipped=summary.skipped + failed)
