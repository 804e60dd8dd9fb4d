"""Small real files for the file-ingest tests: a hand-written PDF with a text layer, an HTML page with boilerplate."""

from __future__ import annotations

from pathlib import Path


def _pdf_string(s: str) -> str:
    return "(" + s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(path: Path, pages: list[list[str]], title: str | None = None) -> Path:
    """A PDF 1.4 file with one Helvetica line per string (its text layer), byte offsets computed exactly."""
    objs: list[str] = []
    n_pages = len(pages)
    font_no = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objs.append("<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>")
    for i, lines in enumerate(pages):
        body = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(f"{_pdf_string(line)} Tj T*" for line in lines) + " ET"
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                    f"/Resources << /Font << /F1 {font_no} 0 R >> >> >>")
        objs.append(f"<< /Length {len(body.encode('latin-1'))} >>\nstream\n{body}\nendstream")
    objs.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info = None
    if title is not None:
        objs.append(f"<< /Title {_pdf_string(title)} >>")
        info = len(objs)
    out = b"%PDF-1.4\n"
    offsets = []
    for no, obj in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{no} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    trailer = f"<< /Size {len(objs) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "") + " >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


ARTICLE = [
    "Honeybees communicate the location of flowers to their hive mates through a waggle dance.",
    "The angle of the dance relative to vertical tells the direction of the food source in relation to the sun, "
    "and the duration of the waggle run encodes the distance to the flowers.",
    "Karl von Frisch decoded this language in the 1940s and shared the Nobel Prize in 1973 for the discovery; "
    "later experiments with robotic bees confirmed that foragers follow the information in the dance.",
]
BOILERPLATE = ["Home", "About us", "Subscribe to our newsletter", "Copyright 2026 Example Media", "Privacy policy"]


def make_html(path: Path, title: str = "How bees dance") -> Path:
    nav = "".join(f'<li><a href="/{w.lower().replace(" ", "-")}">{w}</a></li>' for w in BOILERPLATE[:3])
    paras = "".join(f"<p>{p}</p>" for p in ARTICLE)
    path.write_text(
        f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<header><nav><ul>{nav}</ul></nav></header>
<div class="sidebar"><h3>Related</h3><ul><li><a href="/x">Ten facts about ants</a></li></ul></div>
<main><article><h1>{title}</h1>{paras}</article></main>
<footer><p>{BOILERPLATE[3]}</p><p><a href="/privacy">{BOILERPLATE[4]}</a></p></footer>
</body></html>""",
        encoding="utf-8",
    )
    return path
