"""The document reader: PDF, DOCX, PPTX, Markdown, text, HTML and CSV files in, sentence-aware chunks out.

`DocumentReader` (engine "docreader") answers `ReadRequest`s with `ReadResult`s. Each file is checked before
any parser sees it (extension, PDF encryption and page count, zip bombs and missing parts in Office files,
text encodings), then read with the llama-index file readers from a temporary copy, split per page (or
slide, section, block of CSV rows) with llama-index's `SentenceSplitter` driven by `split_sentences`, which
knows English and Chinese sentence ends. Chunk sizes are in tokens of llama-index's bundled tokenizer. Bad
files fail their request with a `DocumentError` whose `code` says why; nothing here touches the network.

CPU-bound and synchronous: the pool runs it in a worker thread. Documents of several pages report progress
and stop early when the job is cancelled: while splitting, between pages; while reading, only for long PDFs,
which are read PDF_BATCH_PAGES pages at a time (other formats are read by one llama-index call).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
import tempfile
import threading
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bot.errors import BotError, UserFacingError
from engines.base import EngineRequest, run_each

log = logging.getLogger(__name__)

SUPPORTED = ("pdf", "docx", "pptx", "md", "markdown", "txt", "html", "htm", "csv")
_FORMAT = {"markdown": "md", "htm": "html"}  # extension -> ReadResult.format
CSV_BLOCK_ROWS = 50  # CSV rows per "page"
PDF_BATCH_PAGES = 25  # longer PDFs are read this many pages at a time, with progress in between
_PDF_READ_SHARE = 0.85  # of the progress bar, for reading a long PDF (splitting is the rest)
MIN_CHUNK_SIZE = 16  # tokens; below this a single CJK character can overflow a chunk
_MAX_RATIO = 200  # a zip member inflating more than this, and past _RATIO_MIN_BYTES, is a bomb
_RATIO_MIN_BYTES = 2**20
_TITLE_MAX = 80
_DETAIL_MAX = 200


@dataclass(frozen=True)
class ReadRequest:
    """A file to read: its bytes and its name (the extension picks the format). Sizes are in tokens."""

    data: bytes
    name: str
    chunk_size: int = 256
    chunk_overlap: int = 32
    max_unpacked_bytes: int = 50 * 2**20
    max_pages: int = 2000


@dataclass
class Chunk:
    """One piece of a document, whitespace-normalised.

    `ord` is its 0-based place in the document; `page` the 1-based PDF page, PPTX slide or CSV row block
    (else None); `section` the nearest heading (Markdown, HTML, DOCX; the slide title in PPTX) or None.
    """

    text: str
    ord: int
    page: int | None
    section: str | None
    sha256: str


@dataclass
class ReadResult:
    """A read document.

    `pages`: PDF pages, PPTX slides, CSV row blocks (CSV_BLOCK_ROWS rows each), else 1. `title`: the first
    Markdown heading, HTML <title>/<h1>, DOCX heading, else the first line if short, else the file stem.
    `sha256` and `chars` are of the whole normalised text, so identical documents share the hash.
    `format` is the extension, "md" for .markdown and "html" for .htm.
    """

    chunks: list[Chunk]
    pages: int
    title: str
    sha256: str
    format: str
    chars: int


class DocumentError(BotError):
    """A file that cannot be read. `code` is one of unsupported, encrypted, malformed, empty,
    too_large_unpacked, too_many_pages; `params` fill the user's message (never a stack trace).

    A `BotError` (so an `Exception`) because the pool passes our own errors through to the caller
    unwrapped, across a worker-process boundary too (it pickles; `code` and `params` survive).
    """

    def __init__(self, code: str, **params: Any) -> None:
        details = ", ".join(f"{k}={v}" for k, v in params.items())
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.params: dict[str, Any] = params


# -- sentences and normalisation ---------------------------------------------------------------------------------

_CLOSERS = "\"'”’」』）)\\]"
_SENTENCE_END = re.compile(
    rf"[.!?]+[{_CLOSERS}]*\s+"  # English: needs whitespace after, so 3.14 and U.S.A stay whole
    rf"|[。！？；]+[{_CLOSERS}]*\s*"  # Chinese / full-width: whitespace optional
)
_CJK = r"\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def split_sentences(text: str) -> list[str]:
    """`text` cut after each sentence end; the pieces, trailing whitespace included, join back to `text`.

    English ends (`. ! ?`) count when whitespace follows; Chinese and full-width ones (`。！？；`) always.
    Closing quotes and brackets (`”’」』）"')]`) stay with the sentence they close.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def normalise(text: str, keep_lines: bool = False) -> str:
    """NFC, control characters dropped, whitespace runs made one space (one newline between lines when
    `keep_lines`), and no whitespace left between two CJK characters (PDF line breaks inside Chinese)."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    if keep_lines:
        lines = (_CJK_GAP.sub("", " ".join(line.split())) for line in text.splitlines())
        return "\n".join(line for line in lines if line)
    return _CJK_GAP.sub("", " ".join(text.split()))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


# -- llama-index, imported on first use ----------------------------------------------------------------------------

_import_lock = threading.Lock()
_readers_module: Any = None


def _readers() -> Any:
    """`llama_index.readers.file`, imported once. Its slides module calls `logging.basicConfig` on import;
    any root handler or level it adds is taken back so the app's logging setup stays as it was."""
    global _readers_module
    with _import_lock:
        if _readers_module is None:
            root = logging.getLogger()
            handlers, level = list(root.handlers), root.level
            import llama_index.readers.file as module

            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)
            root.setLevel(level)
            _readers_module = module
    return _readers_module


# -- guards --------------------------------------------------------------------------------------------------------


def _extension(name: str) -> str:
    suffix = PurePosixPath(name.replace("\\", "/")).suffix
    return suffix[1:].lower() if suffix else ""


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem.strip() or "document"


def _check_pdf(data: bytes, max_pages: int) -> int:
    """The page count of a readable PDF; `DocumentError` for one that is not a PDF, locked or too long."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    if b"%PDF-" not in data[:1024]:
        raise DocumentError("malformed", detail="not a PDF file")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # an empty user password: any viewer opens it without asking
            except (FileNotDecryptedError, NotImplementedError) as e:
                raise DocumentError("encrypted") from e
            if not opened:
                raise DocumentError("encrypted")
        pages = len(reader.pages)
    except DocumentError:
        raise
    except Exception as e:  # PdfReadError and kin, but a broken file can raise almost anything in pypdf
        raise DocumentError("malformed", detail=_short(e)) from e
    if pages == 0:
        raise DocumentError("malformed", detail="the PDF has no pages")
    if pages > max_pages:
        raise DocumentError("too_many_pages", limit=max_pages)
    return pages


_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_REQUIRED_PART = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml"}
MAX_ZIP_MEMBERS = 20_000  # a 2000-slide deck has ~10k parts; more is an attack on the zip directory parser
_SLIDE_PART = re.compile(r"ppt/slides/slide\d+\.xml")


def _check_office(data: bytes, ext: str, max_unpacked_bytes: int, max_pages: int) -> None:
    """Reject a .docx/.pptx that is not a zip, would unpack past the limit (a zip bomb: judged from the
    central directory, nothing is inflated), lacks its main part, or has too many slides."""
    if data.startswith(_OLE_MAGIC):  # password-protected Office files are OLE containers, not zips
        if "EncryptionInfo".encode("utf-16-le") in data:
            raise DocumentError("encrypted")
        raise DocumentError("malformed", detail=f"an old binary Office file, not .{ext}")
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise DocumentError("malformed", detail=f"not a .{ext} file (not a zip archive)")
    declared = _zip_member_count(data)
    if declared is None or declared > MAX_ZIP_MEMBERS:
        raise DocumentError("malformed", detail=f"too many files inside the .{ext} archive")
    try:
        with zipfile.ZipFile(buffer) as archive:
            members = archive.infolist()
    except Exception as e:  # BadZipFile, truncated or inconsistent directories
        raise DocumentError("malformed", detail=_short(e)) from e
    limit_mb = max(1, round(max_unpacked_bytes / 2**20))
    if sum(member.file_size for member in members) > max_unpacked_bytes:
        raise DocumentError("too_large_unpacked", limit_mb=limit_mb)
    for member in members:
        if member.file_size > _RATIO_MIN_BYTES and member.file_size > _MAX_RATIO * max(1, member.compress_size):
            raise DocumentError("too_large_unpacked", limit_mb=limit_mb)
    names = {member.filename for member in members}
    if _REQUIRED_PART[ext] not in names:
        raise DocumentError("malformed", detail=f"{_REQUIRED_PART[ext]} is missing")
    if ext == "pptx":
        slides = sum(1 for name in names if _SLIDE_PART.fullmatch(name))
        if slides > max_pages:
            raise DocumentError("too_many_pages", limit=max_pages)


def _zip_member_count(data: bytes) -> int | None:
    """The entry count the zip's end record declares (read before zipfile parses the whole directory);
    None if it cannot be found."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, end + 10)
    if count != 0xFFFF:
        return int(count)
    locator = end - 20  # ZIP64: the locator sits just before the end record and points at the ZIP64 end record
    if locator < 0 or data[locator:locator + 4] != b"PK\x06\x07":
        return None
    (offset,) = struct.unpack_from("<Q", data, locator + 8)
    if offset + 40 > len(data) or data[offset:offset + 4] != b"PK\x06\x06":
        return None
    (count64,) = struct.unpack_from("<Q", data, offset + 32)
    return int(count64)


def decode_text(data: bytes) -> str:
    """Text from bytes: a UTF-8 or UTF-16 BOM wins, then strict UTF-8, then GB18030, then Latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:8192]:
        raise DocumentError("malformed", detail="binary data, not text")
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _short(error: BaseException, tmp: str | None = None) -> str:
    """A one-line reason for a user: the exception's type and message, temp paths removed, cut short."""
    text = " ".join(str(error).split())
    if tmp:
        text = text.replace(tmp + "/", "").replace(tmp, "")
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


# -- reading -------------------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    """Raw text of one page / slide / section / row block, before normalisation."""

    text: str
    page: int | None = None
    section: str | None = None


@dataclass
class _Read:
    segments: list[_Segment]
    pages: int = 1
    title: str | None = None
    keep_lines: bool = False  # CSV: a row is a unit; lines are not re-flowed
    read_share: float = 0.0  # the part of the progress bar reading already reported


def _read_pdf(path: Path, data: bytes, pages: int, request: EngineRequest) -> _Read:
    """PDFReader's pages. A long PDF is read PDF_BATCH_PAGES pages at a time (each batch copied to a small PDF
    of its own) so progress shows and a cancel stops it between batches; if a batch cannot be cut out, the
    whole file is read in one go."""
    reader = _readers().PDFReader(return_full_document=False)
    texts: list[str] | None = None
    if pages > PDF_BATCH_PAGES:
        texts = _read_pdf_batches(reader, path, data, pages, request)
    if texts is None:
        texts = [doc.text or "" for doc in reader.load_data(path)]
    segments = [_Segment(text, page=i) for i, text in enumerate(texts, start=1)]
    return _Read(segments, pages=pages, read_share=_PDF_READ_SHARE if pages > PDF_BATCH_PAGES else 0.0)


def _read_pdf_batches(reader: Any, path: Path, data: bytes, pages: int, request: EngineRequest) -> list[str] | None:
    from pypdf import PdfReader, PdfWriter

    try:
        source = PdfReader(io.BytesIO(data))
        if source.is_encrypted:
            source.decrypt("")
    except Exception:
        return None
    texts: list[str] = []
    part = path.with_name("batch.pdf")
    for start in range(0, pages, PDF_BATCH_PAGES):
        _check_cancelled(request)
        request.progress(_PDF_READ_SHARE * start / pages, f"reading page {start + 1}/{pages}")
        end = min(pages, start + PDF_BATCH_PAGES)
        try:
            writer = PdfWriter()
            for i in range(start, end):
                writer.add_page(source.pages[i])
            with part.open("wb") as out:
                writer.write(out)
        except Exception as e:
            log.info("docreader: cannot cut pages %d-%d out of a PDF (%s); reading it whole", start + 1, end,
                     _short(e))
            return None
        docs = reader.load_data(part)
        if len(docs) != end - start:
            return None
        texts.extend(doc.text or "" for doc in docs)
    part.unlink(missing_ok=True)
    return texts


_SEPARATOR_LINE = "-----"  # llama-index's slide section separator


def _slide_text(text: str, title: str) -> str:
    """A slide's text without llama-index's "Title: ..." header (the title shape's text follows anyway)
    and its "-----" separators."""
    prefix = f"Title: {title}"
    if title and text.startswith(prefix) and title in text[len(prefix):]:
        text = text[len(prefix):]
    return "\n".join(line for line in text.splitlines() if line.strip() != _SEPARATOR_LINE)


def _read_pptx(path: Path) -> _Read:
    reader = _readers().PptxReader(extract_images=False, num_workers=0, raise_on_error=True)
    segments = []
    for i, doc in enumerate(reader.load_data(path), start=1):
        title = str(doc.metadata.get("title") or "").strip()
        section = title if title and "\n" not in title and len(title) <= _TITLE_MAX else None
        segments.append(_Segment(_slide_text(doc.text or "", title), page=i, section=section))
    return _Read(segments, pages=max(1, len(segments)))


_HEADING_STYLE = re.compile(r"(Heading \d|Title)$")


def _read_docx(path: Path) -> _Read:
    """DocxReader's text, cut into sections at the paragraphs python-docx says are headings (best effort:
    without them the document is one section)."""
    import docx as python_docx

    text = "\n".join(doc.text or "" for doc in _readers().DocxReader().load_data(path))
    try:
        headings = [p.text.strip() for p in python_docx.Document(str(path)).paragraphs
                    if p.style is not None and _HEADING_STYLE.match(p.style.name or "") and p.text.strip()]
    except Exception as e:
        log.debug("docreader: no docx headings: %s", _short(e))
        headings = []
    known = set(headings)
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    next_heading = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in known and stripped in headings[next_heading:]:
            next_heading = headings.index(stripped, next_heading) + 1
            sections.append((stripped, []))
        sections[-1][1].append(line)
    segments = [_Segment("\n".join(lines), section=section) for section, lines in sections]
    return _Read([s for s in segments if s.text.strip()], title=headings[0] if headings else None)


_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def _markdown_title(text: str) -> str | None:
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := _ATX_HEADING.match(line)):
            return match.group(1).strip() or None
    return None


def _read_markdown(path: Path, text: str) -> _Read:
    tups = _readers().MarkdownReader().parse_tups(str(path))
    segments = [_Segment(f"{header}\n{body}" if header else body, section=header or None) for header, body in tups]
    return _Read(segments, title=_markdown_title(text))


_BLOCK_TAGS = ("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
               "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
               "pre", "section", "table", "td", "th", "tr", "ul")
_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def _read_html(text: str) -> _Read:
    """The whole page's visible text (bs4), in sections at each heading; no script, style or head."""
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, PreformattedString

    soup = BeautifulSoup(text, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    for tag in soup(["head", "title", "script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    root = soup.body or soup
    for tag in root.find_all(_BLOCK_TAGS):
        tag.insert_after("\n")
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    heading: Any = None
    for node in root.descendants:
        if not isinstance(node, NavigableString) or isinstance(node, PreformattedString):
            continue
        parent = node.find_parent(_HEADING_TAGS)
        if parent is not None and parent is not heading:
            heading = parent
            sections.append((" ".join(parent.get_text(" ").split()) or None, []))
        sections[-1][1].append(str(node))
    segments = [_Segment("".join(parts), section=section) for section, parts in sections]
    return _Read([s for s in segments if s.text.strip()], title=title or None)


def _read_csv(path: Path) -> _Read:
    import locale

    readers = _readers()
    if locale.getpreferredencoding(False).lower().replace("-", "") in ("utf8", "utf_8"):
        rows = [doc.text or "" for doc in readers.CSVReader(concat_rows=False).load_data(path)]
    else:  # CSVReader opens the file in the locale's encoding; the temp copy is UTF-8
        rows = [doc.text or "" for doc in readers.PagedCSVReader(encoding="utf-8").load_data(path)]
    blocks = [rows[i:i + CSV_BLOCK_ROWS] for i in range(0, len(rows), CSV_BLOCK_ROWS)]
    segments = [_Segment("\n".join(block), page=n) for n, block in enumerate(blocks, start=1)]
    return _Read(segments, pages=max(1, len(segments)), keep_lines=True)


def _read_txt(path: Path) -> _Read:
    return _Read([_Segment(str(doc.text or "")) for doc in _readers().FlatReader().load_data(path)])


def _first_line_title(segments: list[_Segment]) -> str | None:
    for segment in segments:
        for line in segment.text.splitlines():
            line = " ".join(line.split())
            if line:
                return line if len(line) <= _TITLE_MAX else None
    return None


# -- the engine ----------------------------------------------------------------------------------------------------


class DocumentReader:
    """Reads `ReadRequest`s into chunks; pure CPU, no model (memory_mb 0)."""

    name = "docreader"
    memory_mb = 0

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._splitters: dict[tuple[int, int, bool], Any] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        return run_each(self.read, batch)

    def read(self, request: EngineRequest) -> ReadResult:
        """One request's document, read and chunked (raises `DocumentError` for a bad file)."""
        payload = request.payload
        if not isinstance(payload, ReadRequest):
            raise TypeError(f"docreader engine takes ReadRequest, not {type(payload).__name__}")
        if payload.chunk_size < MIN_CHUNK_SIZE or not 0 <= payload.chunk_overlap < payload.chunk_size:
            raise ValueError(f"ReadRequest needs chunk_size >= {MIN_CHUNK_SIZE} and 0 <= chunk_overlap < chunk_size")
        ext = _extension(payload.name)
        if ext not in SUPPORTED:
            raise DocumentError("unsupported", ext=ext, supported=",".join(SUPPORTED))
        fmt = _FORMAT.get(ext, ext)
        _check_cancelled(request)
        read = self._extract(request, payload, ext, fmt)
        _check_cancelled(request)
        return self._chunk(request, payload, read, fmt)

    def _extract(self, request: EngineRequest, payload: ReadRequest, ext: str, fmt: str) -> _Read:
        """Guards first, then the llama-index reader on a temporary copy of the file."""
        data = payload.data
        pdf_pages = 0
        text = ""
        if fmt == "pdf":
            pdf_pages = _check_pdf(data, payload.max_pages)
        elif fmt in ("docx", "pptx"):
            _check_office(data, fmt, payload.max_unpacked_bytes, payload.max_pages)
        else:
            text = decode_text(data)
            if not text.strip():
                raise DocumentError("empty")
            if fmt == "html":
                return _read_html(text)
            data = text.encode("utf-8")  # the readers all expect UTF-8 files
        with tempfile.TemporaryDirectory(prefix="docreader-") as tmp:
            path = Path(tmp) / f"document.{ext}"
            path.write_bytes(data)
            try:
                if fmt == "pdf":
                    return _read_pdf(path, data, pdf_pages, request)
                if fmt == "pptx":
                    return _read_pptx(path)
                if fmt == "docx":
                    return _read_docx(path)
                if fmt == "md":
                    return _read_markdown(path, text)
                if fmt == "csv":
                    return _read_csv(path)
                return _read_txt(path)
            except BotError:  # DocumentError, or a cancel
                raise
            except Exception as e:
                cause = _unwrap(e)
                log.info("docreader: %s %s unreadable: %s", fmt, payload.name, _short(cause, tmp))
                raise DocumentError("malformed", detail=_short(cause, tmp)) from cause

    def _splitter(self, chunk_size: int, chunk_overlap: int, keep_lines: bool) -> Any:
        key = (chunk_size, chunk_overlap, keep_lines)
        with self._lock:
            splitter = self._splitters.get(key)
            if splitter is None:
                from llama_index.core.node_parser import SentenceSplitter

                # CSV rows are units of their own: split at newlines before sentences.
                splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                            paragraph_separator="\n" if keep_lines else "\n\n\n",
                                            chunking_tokenizer_fn=split_sentences)
                self._splitters[key] = splitter
        return splitter

    def _chunk(self, request: EngineRequest, payload: ReadRequest, read: _Read, fmt: str) -> ReadResult:
        texts = [normalise(s.text, read.keep_lines) for s in read.segments]
        whole = "\n".join(t for t in texts if t)
        if not whole.strip():
            raise DocumentError("empty")
        splitter = self._splitter(payload.chunk_size, payload.chunk_overlap, read.keep_lines)
        chunks: list[Chunk] = []
        seen: set[str] = set()
        total = len(read.segments)
        step = max(1, total // 50)
        for n, (segment, text) in enumerate(zip(read.segments, texts, strict=True)):
            if n % step == 0:
                _check_cancelled(request)
                if total > 1:
                    share = read.read_share
                    request.progress(share + (1 - share) * n / total, f"splitting page {n + 1}/{total}")
            if not text:
                continue
            for piece in splitter.split_text(text):
                piece = normalise(piece, read.keep_lines)
                digest = _sha256(piece)
                if not _has_words(piece) or digest in seen:
                    continue
                seen.add(digest)
                chunks.append(Chunk(text=piece, ord=len(chunks), page=segment.page, section=segment.section,
                                    sha256=digest))
        if not chunks:
            raise DocumentError("empty")
        if total > 1:
            request.progress(1.0, f"splitting page {total}/{total}")
        title = read.title or _first_line_title(read.segments) or _stem(payload.name)
        return ReadResult(chunks=chunks, pages=read.pages, title=title, sha256=_sha256(whole), format=fmt,
                          chars=len(whole))


def _check_cancelled(request: EngineRequest) -> None:
    if request.cancelled():
        raise UserFacingError("job_cancelled")


def _unwrap(error: BaseException) -> BaseException:
    """The real error behind tenacity's RetryError (PDFReader retries its reads)."""
    last = getattr(error, "last_attempt", None)
    if last is not None:
        try:
            inner = last.exception()
        except Exception:
            inner = None
        if isinstance(inner, BaseException):
            return inner
    return error
