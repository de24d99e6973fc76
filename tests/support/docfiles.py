"""Document files built in memory for tests: PDF (hand-written, with a CJK font), DOCX, PPTX, HTML, CSV, Markdown.

Every builder returns the file's bytes. `pdf` writes the PDF objects by hand (no reportlab): ASCII and Latin-1
text uses Helvetica, everything else a Type0 font (`STSong-Light`, `UniGB-UCS2-H`) with hex UCS-2 strings, so
pypdf extracts both English and Chinese. `zip_bomb_docx` crafts a zip whose document part declares gigabytes
while the file stays about a megabyte per GB (the deflate stream of zeros is built once and repeated).
"""

from __future__ import annotations

import csv as _csv
import html as _html
import io
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence

# -- PDF ---------------------------------------------------------------------------------------------------------

_LINE_CHARS = 80  # characters per line before wrapping (a CJK character counts as two)
_FONT_SIZE = 10
_LEADING = 14


def _width(ch: str) -> int:
    return 1 if ord(ch) < 0x100 else 2


def _wrap(text: str) -> list[str]:
    """Lines of about `_LINE_CHARS` columns, broken at spaces where there are any (CJK breaks anywhere)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, cols, last_space = "", 0, -1
        for ch in paragraph:
            if cols + _width(ch) > _LINE_CHARS:
                if last_space > 0:
                    lines.append(line[:last_space])
                    line = line[last_space + 1:]
                else:
                    lines.append(line)
                    line = ""
                cols = sum(_width(c) for c in line)
                last_space = line.rfind(" ")
            line += ch
            cols += _width(ch)
            if ch == " ":
                last_space = len(line) - 1
        lines.append(line)
    return lines


def _runs(line: str) -> list[tuple[bool, str]]:
    """(is_latin1, text) runs of one line."""
    runs: list[tuple[bool, str]] = []
    for ch in line:
        latin = ord(ch) < 0x100
        if runs and runs[-1][0] == latin:
            runs[-1] = (latin, runs[-1][1] + ch)
        else:
            runs.append((latin, ch))
    return runs


def _literal(text: str) -> bytes:
    raw = text.encode("latin-1")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_content(text: str) -> bytes:
    ops = [b"BT", b"%d TL" % _LEADING, b"50 750 Td"]
    for line in _wrap(text):
        for latin, run in _runs(line):
            if latin:
                ops.append(b"/F1 %d Tf %s Tj" % (_FONT_SIZE, _literal(run)))
            else:
                ops.append(b"/F2 %d Tf <%s> Tj" % (_FONT_SIZE, run.encode("utf-16-be").hex().upper().encode()))
        ops.append(b"T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def _pdf_file(objects: list[bytes]) -> bytes:
    """A PDF with `objects` numbered from 1 (object 1 the catalog), with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def pdf(pages: Sequence[str]) -> bytes:
    """A real PDF with one page per string; text is extractable (English and Chinese). Lines wrap at ~80 columns."""
    # 1 catalog, 2 pages, 3 Helvetica, 4 Type0 CJK font, 5 its CIDFont, 6 its descriptor, then (page, content) pairs.
    first = 7
    kids = b" ".join(b"%d 0 R" % (first + 2 * i) for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H"
        b" /DescendantFonts [5 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light"
        b" /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> /FontDescriptor 6 0 R /DW 1000 >>",
        b"<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [-25 -254 1000 880]"
        b" /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>",
    ]
    for i, text in enumerate(pages):
        content = _page_content(text)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
                       b" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % (first + 2 * i + 1))
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    return _pdf_file(objects)


def encrypted_pdf(pages: Sequence[str], user_password: str = "secret", owner_password: str = "owner") -> bytes:
    """`pdf(pages)` encrypted with AES-256; an empty `user_password` makes one any reader can open."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(pages))))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def malformed_pdf() -> bytes:
    """Starts like a PDF, then garbage: no objects, no xref, no trailer."""
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R\n" + bytes(range(256)) * 4


# -- Office ------------------------------------------------------------------------------------------------------


def docx(paragraphs: Sequence[str], headings: Iterable[int] = (), heading_level: int = 1) -> bytes:
    """A .docx with one paragraph per string; those at the indices in `headings` are styled "Heading N"."""
    import docx as python_docx

    heading_set = set(headings)
    document = python_docx.Document()
    for i, text in enumerate(paragraphs):
        if i in heading_set:
            document.add_heading(text, level=heading_level)
        else:
            document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx(slides: Sequence[str], titles: Sequence[str] | None = None) -> bytes:
    """A .pptx with one slide per string (body text); `titles` puts a title on each slide."""
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    for i, text in enumerate(slides):
        if titles is not None:
            slide = presentation.slides.add_slide(presentation.slide_layouts[1])  # title and content
            slide.shapes.title.text = titles[i]
            slide.placeholders[1].text = text
        else:
            slide = presentation.slides.add_slide(presentation.slide_layouts[6])  # blank
            box = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(8), Inches(5))
            box.text_frame.text = text
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)


def _zip_entry(name: str, crc: int, packed: bytes, size: int, offset: int) -> tuple[bytes, bytes]:
    """(local header + data, central directory record) for one deflated entry; ZIP64 fields when needed."""
    raw_name = name.encode()
    zip64 = size >= 0xFFFFFFFF or len(packed) >= 0xFFFFFFFF or offset >= 0xFFFFFFFF
    version = 45 if zip64 else 20
    if zip64:
        local_extra = struct.pack("<HHQQ", 1, 16, size, len(packed))
        local = struct.pack("<4s5H3L2H", b"PK\x03\x04", version, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                            len(raw_name), len(local_extra)) + raw_name + local_extra
        central_extra = struct.pack("<HHQQQ", 1, 24, size, len(packed), offset)
        central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", version, version, 0, 8, 0, 0, crc, 0xFFFFFFFF,
                              0xFFFFFFFF, len(raw_name), len(central_extra), 0, 0, 0, 0, 0xFFFFFFFF)
        return local + packed, central + raw_name + central_extra
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", version, 0, 8, 0, 0, crc, len(packed), size,
                        len(raw_name), 0) + raw_name
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", version, version, 0, 8, 0, 0, crc, len(packed), size,
                          len(raw_name), 0, 0, 0, 0, 0, offset)
    return local + packed, central + raw_name


def zip_bomb_docx(unpacked_mb: int = 2048) -> bytes:
    """A zip named like a .docx whose `word/document.xml` inflates to `unpacked_mb` MiB of zeros.

    The file is about 1 KB per MiB declared; building it takes well under a second and little memory: one
    MiB of zeros is deflated once (ended by a full flush, so the block is self-contained) and repeated.
    """
    mib = bytes(2**20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    packed = block * unpacked_mb + compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(unpacked_mb):
        crc = zlib.crc32(mib, crc)
    size = unpacked_mb * 2**20

    types_packed = zlib.compress(_CONTENT_TYPES, 9)[2:-4]  # raw deflate
    data = io.BytesIO()
    centrals = []
    for name, entry_crc, entry_packed, entry_size in (
        ("[Content_Types].xml", zlib.crc32(_CONTENT_TYPES), types_packed, len(_CONTENT_TYPES)),
        ("word/document.xml", crc, packed, size),
    ):
        local, central = _zip_entry(name, entry_crc, entry_packed, entry_size, data.tell())
        data.write(local)
        centrals.append(central)
    directory = b"".join(centrals)
    start = data.tell()
    data.write(directory)
    data.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(centrals), len(centrals), len(directory), start, 0))
    return data.getvalue()


def zip_with(members: dict[str, bytes]) -> bytes:
    """A plain deflated zip of `members` (for zips that are not valid Office files)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


# -- text formats ------------------------------------------------------------------------------------------------


def html(title: str, body_paragraphs: Sequence[str], headings: dict[int, str] | None = None,
         script: str = "") -> bytes:
    """An HTML page: `<title>`, then `<p>`s; `headings[i]` puts an `<h2>` before paragraph i; `script` adds a
    `<script>` whose text must not be read."""
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{_html.escape(title)}</title>"]
    if script:
        parts.append(f"<script>{script}</script><style>p {{ color: red; }}</style>")
    parts.append("</head><body>")
    for i, text in enumerate(body_paragraphs):
        if headings and i in headings:
            parts.append(f"<h2>{_html.escape(headings[i])}</h2>")
        parts.append(f"<p>{_html.escape(text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


def csv(rows: Sequence[Sequence[object]]) -> bytes:
    """UTF-8 CSV of `rows` (the first row is usually the header)."""
    out = io.StringIO()
    writer = _csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def markdown(sections: Sequence[tuple[str, str]], title: str | None = None) -> bytes:
    """Markdown: `# title` (if given), then `## heading` + body for each (heading, body) section."""
    parts = [f"# {title}\n"] if title else []
    for heading, body in sections:
        parts.append(f"## {heading}\n\n{body}\n")
    return "\n".join(parts).encode("utf-8")
