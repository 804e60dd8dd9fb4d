"""Ingest from files as people have them (ragstore.files, `ragstore ingest FOLDER`):
.txt, .md, .html (main text only) and .pdf (text layer), file metadata, unchanged files skipped on rerun.

The files are made here: a PDF written by hand (filemakers.make_pdf, exact xref offsets),
an HTML page with navigation, sidebar and footer that must not reach the text.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ragstore
from filemakers import ARTICLE, BOILERPLATE, make_html, make_pdf
from helpers import HashEmbedder
from ragstore import embed
from ragstore.files import FileFormatError, MissingExtraError, extract_text, find_files, ingest_files
from ragstore_cli.app import app

pytest.importorskip("trafilatura")
pytest.importorskip("pypdfium2")


@pytest.fixture()
def folder(tmp_path) -> Path:
    d = tmp_path / "notes"
    (d / "sub").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "a.txt").write_text("Plain notes about tides and the moon.\n", encoding="utf-8")
    (d / "sub" / "b.md").write_text("# Sourdough\n\nFeed the starter flour and water every day.\n", encoding="utf-8")
    make_html(d / "sub" / "bees.html")
    make_pdf(d / "report.pdf", [["Quarterly report on glacier retreat.", "Ice lost: 12 percent."],
                                ["Page two: recommendations."]], title="Glacier report")
    (d / ".git" / "x.txt").write_text("hidden", encoding="utf-8")
    (d / "table.csv").write_text("a,b\n", encoding="utf-8")
    return d


def test_extract_html_main_text_without_boilerplate(tmp_path):
    ft = extract_text("p.html", make_html(tmp_path / "p.html").read_bytes())
    assert ft.title == "How bees dance"
    for para in ARTICLE:
        assert para in ft.text
    for junk in [*BOILERPLATE, "Ten facts about ants"]:
        assert junk not in ft.text, junk


def test_extract_pdf_text_layer_and_title(tmp_path):
    p = make_pdf(tmp_path / "r.pdf", [["Hello (world)", "second line"], ["page two"]], title="T")
    ft = extract_text("r.pdf", p.read_bytes())
    assert ft.text == "Hello (world)\nsecond line\n\npage two" and ft.title == "T"
    assert extract_text("r.pdf", make_pdf(tmp_path / "u.pdf", [["x"]]).read_bytes()).title is None


def test_extract_errors(tmp_path):
    with pytest.raises(FileFormatError, match="no text layer"):
        extract_text("s.pdf", make_pdf(tmp_path / "s.pdf", [[]]).read_bytes())
    with pytest.raises(FileFormatError, match="not a readable PDF"):
        extract_text("d.pdf", b"%PDF-1.4\nthis is not a pdf")
    with pytest.raises(FileFormatError) as e:
        extract_text("t.txt", b"one\ntwo \xff")
    assert e.value.line == 2 and "not valid UTF-8" in str(e.value)
    md = extract_text("n.md", "\ufeff---\ntitle: Front\n---\n# Heading\ntext".encode())
    assert md.title == "Front" and md.text.startswith("---")
    assert extract_text("n.MD", b"intro\n\n# Later heading #\n").title == "Later heading"
    assert extract_text("n.txt", b"# not a title in plain text").title is None


def test_find_files(folder):
    assert [i for _, i in find_files([folder])] == ["a.txt", "report.pdf", "sub/b.md", "sub/bees.html"]
    assert [i for _, i in find_files([folder / "report.pdf"])] == ["report.pdf"]
    with pytest.raises(FileFormatError, match="unsupported"):
        find_files([folder / "table.csv"])
    with pytest.raises(FileNotFoundError):
        find_files([folder / "nope"])


def test_ingest_files_meta_and_rerun(folder, tmp_path):
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder(), chunk_tokens=32) as st:
        s1 = ingest_files(st, [folder], source="notes")
        assert (s1.documents, s1.added, s1.unchanged) == (4, 4, 0)
        assert sorted(st.doc_ids()) == ["a.txt", "report.pdf", "sub/b.md", "sub/bees.html"]
        pdf = st.get("report.pdf")
        assert pdf.text.startswith("Quarterly report on glacier retreat.") and pdf.source == "notes"
        m, f = pdf.meta, folder / "report.pdf"
        assert m["type"] == "pdf" and m["title"] == "Glacier report" and m["path"] == str(f.resolve())
        assert m["size"] == f.stat().st_size and m["mtime"] == f.stat().st_mtime
        assert len(m["sha256"]) == 64
        assert st.get("sub/b.md").meta["title"] == "Sourdough" and "title" not in st.get("a.txt").meta
        html = st.get("sub/bees.html")
        assert html.meta["type"] == "html" and "Subscribe" not in html.text and ARTICLE[0] in html.text
        assert st.query("waggle dance of honeybees", 1, mode="lexical")[0].doc_id == "sub/bees.html"

        # rerun: nothing changed, nothing read again
        s2 = ingest_files(st, [folder], source="notes")
        assert (s2.documents, s2.added, s2.replaced, s2.unchanged, s2.chunks) == (4, 0, 0, 4, 0)

        # touched (new mtime, same bytes): unchanged; edited: replaced; new file: added
        a = folder / "a.txt"
        os.utime(a, (a.stat().st_atime, a.stat().st_mtime + 10))
        (folder / "sub" / "b.md").write_text("# Sourdough\n\nFeed it twice a day in summer.\n", encoding="utf-8")
        (folder / "c.txt").write_text("A new file.", encoding="utf-8")
        s3 = ingest_files(st, [folder], source="notes")
        assert (s3.documents, s3.added, s3.replaced, s3.unchanged) == (5, 1, 1, 3)
        assert st.get("sub/b.md").text.endswith("twice a day in summer.\n")

        # another source: every document takes it (replaced), though no file changed
        s4 = ingest_files(st, [folder], source="archive")
        assert (s4.replaced, s4.unchanged) == (5, 0) and st.get("a.txt").source == "archive"


def test_ingest_files_errors_reported(folder, tmp_path):
    (folder / "bad.txt").write_bytes(b"\xff\xfe")
    (folder / "empty.md").write_text("   \n", encoding="utf-8")
    errors: list[tuple[str, str]] = []
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder()) as st:
        s = ingest_files(st, [folder], on_error=lambda p, e: errors.append((p.name, str(e))))
        assert s.added == 4 and s.skipped == 2
        assert [n for n, _ in errors] == ["bad.txt", "empty.md"]
        assert "not valid UTF-8" in errors[0][1] and "empty" in errors[1][1]
        with pytest.raises(FileFormatError):
            ingest_files(st, [folder])  # without on_error the first bad file raises


def test_missing_extra_is_a_clear_error(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trafilatura", None)  # import trafilatura -> ImportError
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder()) as st:
        with pytest.raises(MissingExtraError, match=r"ragstore\[files\]"):
            ingest_files(st, [folder])
        assert st.stats().documents == 0  # said before anything is read
        ingest_files(st, [folder / "a.txt"])  # text files need no extra
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "s2"), str(folder)], prog_name="ragstore")
    assert r.exit_code == 1 and "ragstore[files]" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s2").exists()


@pytest.fixture()
def hash_embedder():
    embed.register("test-hash-files", lambda arg: HashEmbedder())
    yield "test-hash-files"
    embed.unregister("test-hash-files")


def test_cli_ingest_folder_and_rerun(folder, tmp_path, hash_embedder):
    runner = CliRunner()

    def ingest(*extra: str):
        r = runner.invoke(app, ["ingest", str(tmp_path / "s"), str(folder), "--embedder", hash_embedder, *extra],
                          prog_name="ragstore")
        assert r.exit_code == 0, r.output
        return r.stdout

    assert ingest("--source", "notes").startswith("4 documents (4 added, 0 replaced, 0 unchanged)")
    assert ingest("--source", "notes").startswith("4 documents (0 added, 0 replaced, 4 unchanged)")
    make_pdf(folder / "report.pdf", [["Revised report."]], title="Glacier report v2")
    assert ingest("--source", "notes").startswith("4 documents (0 added, 1 replaced, 3 unchanged)")
    assert ingest().startswith("4 documents (0 added, 4 replaced, 0 unchanged)")  # the source dropped
    assert ingest().startswith("4 documents (0 added, 0 replaced, 4 unchanged)")
    with ragstore.open(tmp_path / "s", readonly=True, embedder=HashEmbedder()) as st:
        d = st.get("report.pdf")
        assert d.text == "Revised report." and d.meta["title"] == "Glacier report v2" and d.source is None
        assert st.get("sub/bees.html").meta["title"] == "How bees dance"
