"""The document reader: every format reads with its pages and sections, sentences split in English and
Chinese, duplicates go, and every bad file fails with the right `DocumentError` code before a parser runs."""

from __future__ import annotations

import re
import socket
import time
import tracemalloc
from typing import Any

import pytest

from bot.errors import UserFacingError
from engines.base import EngineRequest
from engines.documents import (
    CSV_BLOCK_ROWS,
    SUPPORTED,
    Chunk,
    DocumentError,
    DocumentReader,
    ReadRequest,
    ReadResult,
    split_sentences,
)
from tests.support import docfiles


@pytest.fixture(scope="module")
def reader() -> DocumentReader:
    return DocumentReader()


def read(reader: DocumentReader, data: bytes, name: str, **options: Any) -> ReadResult:
    [result] = reader.run([EngineRequest(ReadRequest(data, name, **options))])
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, ReadResult)
    return result


def fails(reader: DocumentReader, data: bytes, name: str, **options: Any) -> DocumentError:
    [result] = reader.run([EngineRequest(ReadRequest(data, name, **options))])
    assert isinstance(result, DocumentError), result
    return result


def tokens(text: str) -> int:
    from llama_index.core.utils import get_tokenizer

    return len(get_tokenizer()(text))


def assert_well_formed(result: ReadResult) -> None:
    assert [c.ord for c in result.chunks] == list(range(len(result.chunks)))
    for chunk in result.chunks:
        assert chunk.text == " ".join(chunk.text.split()) or "\n" in chunk.text  # normalised (CSV keeps rows)
        assert re.search(r"\w", chunk.text)


ZH_ENDS = "。！？"


def chinese_text(sentences: int) -> tuple[str, list[str]]:
    """Distinct Chinese sentences ending in 。！？ in turn; the text and the sentences."""
    parts = [f"第{i}段讲述了文档切分系统如何处理中文句子{ZH_ENDS[i % 3]}" for i in range(sentences)]
    return "".join(parts), parts


def english_text(sentences: int) -> tuple[str, list[str]]:
    parts = [f"Sentence {i} explains how the reader splits English text{'.!?'[i % 3]}" for i in range(sentences)]
    return " ".join(parts), parts


# -- formats -------------------------------------------------------------------------------------------------


def test_pdf_pages_are_numbered_and_text_extracted(reader: DocumentReader) -> None:
    pages = ["Alpha page talks about apples.", "Beta page talks about bananas.", "Gamma page talks about cherries."]
    result = read(reader, docfiles.pdf(pages), "fruit.pdf")
    assert result.format == "pdf"
    assert result.pages == 3
    assert [(c.page, c.text) for c in result.chunks] == [(i + 1, text) for i, text in enumerate(pages)]
    assert result.title == pages[0]  # short first line
    assert result.chars == len("\n".join(pages))
    assert_well_formed(result)


def test_pdf_chinese_and_mixed_text_round_trips(reader: DocumentReader) -> None:
    zh, _ = chinese_text(3)
    mixed = "混合文本 with English words 和中文。"
    result = read(reader, docfiles.pdf([zh, mixed]), "中文.pdf")
    by_page = {c.page: c.text for c in result.chunks}
    assert by_page[1] == zh
    assert by_page[2] == mixed


def test_pdf_with_empty_user_password_is_readable(reader: DocumentReader) -> None:
    result = read(reader, docfiles.encrypted_pdf(["Open to everyone."], user_password=""), "open.pdf")
    assert [c.text for c in result.chunks] == ["Open to everyone."]


def test_docx_text_and_heading_sections(reader: DocumentReader) -> None:
    data = docfiles.docx(["Project Plan", "We build a reader. It reads files.", "Risks", "中文风险说明。"],
                         headings=[0, 2])
    result = read(reader, data, "plan.docx")
    assert result.format == "docx" and result.pages == 1
    assert result.title == "Project Plan"
    assert [(c.section, c.page) for c in result.chunks] == [("Project Plan", None), ("Risks", None)]
    assert "We build a reader. It reads files." in result.chunks[0].text
    assert "中文风险说明。" in result.chunks[1].text
    assert "中文" not in result.chunks[0].text


def test_pptx_slides_are_pages(reader: DocumentReader) -> None:
    data = docfiles.pptx(["Revenue grew this year.", "第二张幻灯片讲成本。", "Next steps are hiring."],
                         titles=["Revenue", "成本", "Plans"])
    result = read(reader, data, "deck.pptx")
    assert result.format == "pptx"
    assert result.pages == 3
    assert [(c.page, c.section) for c in result.chunks] == [(1, "Revenue"), (2, "成本"), (3, "Plans")]
    assert "Revenue grew this year." in result.chunks[0].text
    assert "第二张幻灯片讲成本。" in result.chunks[1].text
    for chunk in result.chunks:  # llama-index's "Title: ..." header and "-----" separators are gone
        assert "Title:" not in chunk.text and "-----" not in chunk.text
    assert result.title == "Revenue"


def test_pptx_blank_slide_keeps_numbering(reader: DocumentReader) -> None:
    result = read(reader, docfiles.pptx(["First slide text.", "", "Third slide text."]), "gap.pptx")
    assert result.pages == 3
    assert [(c.page, c.text) for c in result.chunks] == [(1, "First slide text."), (3, "Third slide text.")]


def test_markdown_title_and_sections(reader: DocumentReader) -> None:
    data = docfiles.markdown([("Install", "Run the installer. Then restart."), ("Use", "Type a question.")],
                             title="User Guide")
    for name in ("guide.md", "guide.markdown"):
        result = read(reader, data, name)
        assert result.format == "md"
        assert result.title == "User Guide"
        sections = {c.section: c.text for c in result.chunks}
        assert set(sections) == {"User Guide Install", "User Guide Use"}
        assert "Run the installer. Then restart." in sections["User Guide Install"]
        assert "Type a question." in sections["User Guide Use"]
        assert "#" not in "".join(sections.values())


def test_html_visible_text_sections_and_title(reader: DocumentReader) -> None:
    data = docfiles.html("Team Handbook", ["Welcome aboard. Read this first.", "Expenses need receipts."],
                         headings={1: "Money"}, script="var secret = 'do not index';")
    for name in ("handbook.html", "handbook.htm"):
        result = read(reader, data, name)
        assert result.format == "html"
        assert result.title == "Team Handbook"
        text = " ".join(c.text for c in result.chunks)
        assert "Welcome aboard. Read this first." in text and "Expenses need receipts." in text
        assert "secret" not in text and "color" not in text and "Team Handbook" not in text
        assert result.chunks[-1].section == "Money"
        assert result.chunks[-1].text.startswith("Money")


def test_html_inline_tags_do_not_break_words(reader: DocumentReader) -> None:
    page = b"<html><body><h1>Big <i>News</i></h1><p>Hello <b>world</b>.</p><p>x<br>y</p></body></html>"
    result = read(reader, page, "news.html")
    assert result.title == "Big News"
    assert result.chunks[0].text == "Big News Hello world. x y"
    assert result.chunks[0].section == "Big News"


def test_csv_rows_in_blocks(reader: DocumentReader) -> None:
    rows: list[list[object]] = [["id", "city"], *([i, f"城市{i}"] for i in range(1, 120))]
    result = read(reader, docfiles.csv(rows), "cities.csv")
    assert result.format == "csv"
    blocks = -(-len(rows) // CSV_BLOCK_ROWS)
    assert result.pages == blocks
    assert {c.page for c in result.chunks} == set(range(1, blocks + 1))
    row_75 = f"{rows[75][0]}, {rows[75][1]}"
    [chunk] = [c for c in result.chunks if row_75 in c.text.split("\n")]
    assert chunk.page == 75 // CSV_BLOCK_ROWS + 1
    for chunk in result.chunks:  # rows are never cut
        for line in chunk.text.split("\n"):
            assert line == "id, city" or re.fullmatch(r"\d+, 城市\d+", line)


def test_text_encodings(reader: DocumentReader) -> None:
    text = "中文文本测试。第二句话！"
    assert read(reader, text.encode("gb18030"), "gb.txt").chunks[0].text == text
    assert read(reader, b"\xef\xbb\xbf" + text.encode(), "bom.txt").chunks[0].text == text
    assert read(reader, text.encode("utf-16"), "wide.txt").chunks[0].text == text
    assert read(reader, "Café crème. Très bon.".encode("latin-1"), "fr.txt").chunks


def test_txt_title_is_short_first_line_else_stem(reader: DocumentReader) -> None:
    assert read(reader, b"Release notes\n\nThe bot reads files now.", "notes.txt").title == "Release notes"
    long_line = ("word " * 40).strip() + "."
    assert read(reader, long_line.encode(), "dir/long name.txt").title == "long name"


# -- splitting -----------------------------------------------------------------------------------------------


def test_split_sentences_english_and_chinese() -> None:
    text = 'He said "Hi." Then left! Is 3.14 pi? 他说：“好。”然后走了！（真的？）是的；还有 tail'
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert [p.strip() for p in pieces] == ['He said "Hi."', "Then left!", "Is 3.14 pi?", "他说：“好。”", "然后走了！",
                                           "（真的？）", "是的；", "还有 tail"]
    assert split_sentences("no end here") == ["no end here"]
    assert split_sentences("") == []


def test_long_chinese_text_splits_at_sentence_ends(reader: DocumentReader) -> None:
    text, sentences = chinese_text(80)
    result = read(reader, text.encode(), "长文.txt", chunk_size=64, chunk_overlap=0)
    assert len(result.chunks) > 5
    for chunk in result.chunks:
        assert chunk.text[-1] in ZH_ENDS
        assert tokens(chunk.text) <= 64
    joined = "".join(c.text for c in result.chunks)
    assert joined == text  # no overlap asked: the chunks are the text, cut only between sentences
    assert all(s in joined for s in sentences)


def test_long_english_text_splits_at_sentence_ends(reader: DocumentReader) -> None:
    text, sentences = english_text(60)
    result = read(reader, text.encode(), "long.txt", chunk_size=48, chunk_overlap=12)
    assert len(result.chunks) > 5
    for chunk in result.chunks:
        assert chunk.text[-1] in ".!?"
        assert re.match(r"Sentence \d+ ", chunk.text)  # starts at a sentence too (the overlap is whole ones)
        assert tokens(chunk.text) <= 48
    for sentence in sentences:
        assert any(sentence in c.text for c in result.chunks)
    # with overlap, each chunk after the first begins with the previous chunk's last sentence
    last = [split_sentences(c.text)[-1].strip() for c in result.chunks]
    assert all(result.chunks[i + 1].text.startswith(last[i]) for i in range(len(last) - 1))


def test_pdf_chunks_keep_their_page(reader: DocumentReader) -> None:
    zh, _ = chinese_text(30)
    en, _ = english_text(30)
    result = read(reader, docfiles.pdf([zh, en]), "two.pdf", chunk_size=64, chunk_overlap=0)
    pages = [c.page or 0 for c in result.chunks]
    assert pages == sorted(pages) and set(pages) == {1, 2} and len(pages) > 4
    for chunk in result.chunks:
        has_chinese = bool(re.search(r"[\u4e00-\u9fff]", chunk.text))
        assert has_chinese == (chunk.page == 1)


def test_duplicate_chunks_and_punctuation_only_chunks_are_dropped(reader: DocumentReader) -> None:
    boiler = "Confidential. Do not share."
    result = read(reader, docfiles.pdf([boiler, "Real content here.", boiler, "!!! ... ???"]), "dup.pdf")
    assert [(c.page, c.text, c.ord) for c in result.chunks] == [(1, boiler, 0), (2, "Real content here.", 1)]
    assert len({c.sha256 for c in result.chunks}) == 2
    assert result.pages == 4


def test_identical_documents_share_sha256(reader: DocumentReader) -> None:
    data = docfiles.docx(["Same words. Same order."])
    first, second = read(reader, data, "a.docx"), read(reader, data, "b.docx")
    assert first.sha256 == second.sha256
    assert [c.sha256 for c in first.chunks] == [c.sha256 for c in second.chunks]
    # whitespace does not matter, words do
    assert read(reader, b"one  two\n three", "x.txt").sha256 == read(reader, b"one two three", "y.txt").sha256
    assert read(reader, b"one two three", "x.txt").sha256 != read(reader, b"one two four", "x.txt").sha256


# -- bad input -----------------------------------------------------------------------------------------------


def test_unsupported_extensions(reader: DocumentReader) -> None:
    for name, ext in (("setup.exe", "exe"), ("data.xyz", "xyz"), ("README", "")):
        error = fails(reader, b"MZ\x90\x00", name)
        assert error.code == "unsupported"
        assert error.params == {"ext": ext, "supported": ",".join(SUPPORTED)}


def test_encrypted_pdf(reader: DocumentReader) -> None:
    assert fails(reader, docfiles.encrypted_pdf(["Top secret plans."]), "locked.pdf").code == "encrypted"


def test_malformed_pdfs(reader: DocumentReader) -> None:
    broken = fails(reader, docfiles.malformed_pdf(), "broken.pdf")
    assert broken.code == "malformed"
    assert "Traceback" not in broken.params["detail"] and len(broken.params["detail"]) <= 200
    not_pdf = fails(reader, b"just some text, not a pdf", "fake.pdf")
    assert not_pdf.code == "malformed" and not_pdf.params["detail"] == "not a PDF file"


def test_too_many_pages(reader: DocumentReader) -> None:
    error = fails(reader, docfiles.pdf(["page"] * 5), "long.pdf", max_pages=4)
    assert (error.code, error.params) == ("too_many_pages", {"limit": 4})
    error = fails(reader, docfiles.pptx(["slide"] * 5), "long.pptx", max_pages=4)
    assert (error.code, error.params) == ("too_many_pages", {"limit": 4})
    assert read(reader, docfiles.pdf(["page"] * 4), "ok.pdf", max_pages=4).pages == 4


def test_empty_documents(reader: DocumentReader) -> None:
    assert fails(reader, b"", "empty.txt").code == "empty"
    assert fails(reader, b" \n\t\r\n ", "blank.md").code == "empty"
    assert fails(reader, docfiles.docx(["   ", "", "\t"]), "blank.docx").code == "empty"
    assert fails(reader, docfiles.pdf(["", ""]), "blank.pdf").code == "empty"
    assert fails(reader, docfiles.pptx(["", " "]), "blank.pptx").code == "empty"
    assert fails(reader, b"<html><body><script>x()</script></body></html>", "blank.html").code == "empty"


def test_zip_bomb_docx_is_refused_without_inflating(reader: DocumentReader) -> None:
    bomb = docfiles.zip_bomb_docx(2048)
    assert len(bomb) < 5 * 2**20
    tracemalloc.start()
    try:
        started = time.perf_counter()
        error = fails(reader, bomb, "bomb.docx", max_unpacked_bytes=2**40)  # the ratio rule alone
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (error.code, error.params) == ("too_large_unpacked", {"limit_mb": 2**20})
    assert elapsed < 0.5
    assert peak < 100 * 2**20
    # and the total-size rule on its own
    assert fails(reader, bomb, "bomb.docx").params == {"limit_mb": 50}


def test_unpacked_size_limit_on_an_honest_docx(reader: DocumentReader) -> None:
    data = docfiles.docx(["Ordinary text. " * 50])
    error = fails(reader, data, "big.docx", max_unpacked_bytes=2**10)
    assert (error.code, error.params) == ("too_large_unpacked", {"limit_mb": 1})


def test_broken_office_files(reader: DocumentReader) -> None:
    not_zip = fails(reader, b"this is not a zip file", "report.docx")
    assert not_zip.code == "malformed"
    no_part = fails(reader, docfiles.zip_with({"hello.txt": b"hi"}), "report.docx")
    assert (no_part.code, no_part.params) == ("malformed", {"detail": "word/document.xml is missing"})
    assert fails(reader, docfiles.docx(["a docx, not slides"]), "slides.pptx").code == "malformed"
    bad_xml = docfiles.zip_with({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<not xml"})
    assert fails(reader, bad_xml, "bad.docx").code == "malformed"
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "EncryptionInfo".encode("utf-16-le")
    assert fails(reader, ole, "locked.docx").code == "encrypted"
    assert fails(reader, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old.pptx").code == "malformed"


def test_zip_with_too_many_members_is_refused_before_parsing(reader: DocumentReader) -> None:
    from engines.documents import MAX_ZIP_MEMBERS

    members = {f"word/part{i}.xml": b"" for i in range(MAX_ZIP_MEMBERS + 1)}
    members["word/document.xml"] = b"<w:document/>"
    error = fails(reader, docfiles.zip_with(members), "many.docx")
    assert (error.code, error.params) == ("malformed", {"detail": "too many files inside the .docx archive"})


def test_binary_data_named_txt_is_malformed(reader: DocumentReader) -> None:
    assert fails(reader, b"\x00\x01\x02binary\x00", "data.txt").code == "malformed"


# -- the engine ----------------------------------------------------------------------------------------------


def test_batch_fails_only_bad_requests(reader: DocumentReader) -> None:
    results = reader.run([
        EngineRequest(ReadRequest(b"Good text.", "good.txt")),
        EngineRequest(ReadRequest(b"", "empty.txt")),
        EngineRequest("not a request"),
        EngineRequest(ReadRequest(b"text", "bad.txt", chunk_size=64, chunk_overlap=64)),
    ])
    assert isinstance(results[0], ReadResult) and results[0].chunks[0].text == "Good text."
    assert isinstance(results[1], DocumentError)
    assert isinstance(results[2], TypeError)
    assert isinstance(results[3], ValueError)
    assert (reader.name, reader.memory_mb) == ("docreader", 0)
    assert isinstance(results[0].chunks[0], Chunk)


def test_progress_and_cancellation(reader: DocumentReader) -> None:
    data = docfiles.pdf([f"Page {i} has its own text." for i in range(1, 6)])
    seen: list[tuple[float, str]] = []
    [result] = reader.run([EngineRequest(ReadRequest(data, "p.pdf"), progress=lambda f, n: seen.append((f, n)))])
    assert isinstance(result, ReadResult)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 5

    [cancelled] = reader.run([EngineRequest(ReadRequest(data, "p.pdf"), cancelled=lambda: True)])
    assert isinstance(cancelled, UserFacingError) and cancelled.key == "job_cancelled"


def test_long_pdf_is_read_in_batches_with_progress(reader: DocumentReader, monkeypatch: pytest.MonkeyPatch) -> None:
    import engines.documents

    pages = [f"Page {i} says something about topic number {i}." for i in range(1, 61)]
    data = docfiles.pdf(pages)
    notes: list[tuple[float, str]] = []
    batched = reader.run([EngineRequest(ReadRequest(data, "long.pdf"), progress=lambda f, n: notes.append((f, n)))])[0]
    assert isinstance(batched, ReadResult)
    assert [(c.page, c.text) for c in batched.chunks] == [(i + 1, text) for i, text in enumerate(pages)]
    reading = [n for _, n in notes if n.startswith("reading")]
    assert reading == ["reading page 1/60", "reading page 26/60", "reading page 51/60"]
    assert notes.index((0.0, "reading page 1/60")) == 0 and notes[-1][0] == 1.0
    assert [f for f, _ in notes] == sorted(f for f, _ in notes)

    monkeypatch.setattr(engines.documents, "PDF_BATCH_PAGES", 1000)  # the same file read whole
    whole = read(reader, data, "long.pdf")
    assert [(c.page, c.text) for c in whole.chunks] == [(c.page, c.text) for c in batched.chunks]
    assert whole.sha256 == batched.sha256


def test_cancel_stops_a_long_pdf_between_batches(reader: DocumentReader) -> None:
    data = docfiles.pdf([f"Page {i}." for i in range(1, 101)])
    notes: list[str] = []
    request = EngineRequest(ReadRequest(data, "long.pdf"), progress=lambda f, n: notes.append(n),
                            cancelled=lambda: len(notes) >= 2)
    [result] = reader.run([request])
    assert isinstance(result, UserFacingError) and result.key == "job_cancelled"
    assert notes == ["reading page 1/100", "reading page 26/100"]


def test_reads_offline(reader: DocumentReader, monkeypatch: pytest.MonkeyPatch) -> None:
    """No reader or tokenizer reaches for the network, even loading the tokenizer from scratch."""
    import llama_index.core
    import tiktoken.registry

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(llama_index.core, "global_tokenizer", None)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    fresh = DocumentReader()
    zh, _ = chinese_text(20)
    files = {"a.pdf": docfiles.pdf([zh, "English page."]), "b.docx": docfiles.docx([zh]),
             "c.pptx": docfiles.pptx([zh]), "d.md": docfiles.markdown([("Head", zh)]),
             "e.html": docfiles.html("T", [zh]), "f.csv": docfiles.csv([["a", "b"], [1, 2]]), "g.txt": zh.encode()}
    for name, data in files.items():
        assert read(fresh, data, name, chunk_size=64, chunk_overlap=8).chunks, name


def test_document_error_passes_the_pool_and_pickles() -> None:
    """The pool hands our own errors to the caller as they are (else `except DocumentError` never fires),
    and process workers pickle them."""
    import pickle

    from engines.jobs import engine_error

    error = DocumentError("too_large_unpacked", limit_mb=50)
    assert engine_error(error) is error
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, DocumentError)
    assert (copy.code, copy.params) == ("too_large_unpacked", {"limit_mb": 50})
