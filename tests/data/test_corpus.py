import bz2
import gzip
import importlib.util
import logging

import pytest

from bert_fast.data.corpus import (
    CorpusError,
    CorpusStats,
    corpus_fingerprint,
    read_documents,
    read_text_file,
    wiki_paragraphs,
    wikipedia_sample_path,
)


def test_bert_format_documents_and_sentences(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("First sentence.\nSecond one here.\n\n\nOther doc. It has two sentences on one line.\n")
    docs = list(read_text_file(path))
    assert docs == [["First sentence.", "Second one here."],
                    ["Other doc.", "It has two sentences on one line."]]
    assert list(read_text_file(path, split=False))[1] == ["Other doc. It has two sentences on one line."]


def test_folders_and_compressed_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Bee one.\n")
    (tmp_path / "a.txt").write_text("Ay one.\n\nAy two.\n")
    (tmp_path / "ignored.md").write_text("Not read.\n")
    docs, stats = read_documents([tmp_path])
    assert docs == [["Ay one."], ["Ay two."], ["Bee one."]]
    assert stats.files == 2 and stats.documents == 3
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("Gee zipped.\n")
    with bz2.open(tmp_path / "d.txt.bz2", "wt") as f:
        f.write("Bee zipped.\n")
    docs, _ = read_documents([tmp_path / "c.txt.gz", tmp_path / "d.txt.bz2"])
    assert docs == [["Gee zipped."], ["Bee zipped."]]


def test_non_utf8_lines_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"Good line one.\n\xff\xfe broken \xc3\x28 bytes.\nGood line two.\n\nNext doc.\n")
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING, logger="bert_fast"):
        docs = list(read_text_file(path, stats=stats))
    assert docs == [["Good line one.", "Good line two."], ["Next doc."]]
    assert stats.skipped_lines == 1 and stats.skipped_by_file == {str(path): 1}
    assert "not valid UTF-8" in caplog.text


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\xff\xfe\x00\x01\n\x80\x81\n", "not UTF-8"),
])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        read_documents([path])


def test_missing_and_empty_corpora(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_documents([tmp_path / "nope.txt"])
    with pytest.raises(CorpusError, match="no \\*.txt files"):
        read_documents([tmp_path])
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(CorpusError, match="holds no text"):
        read_documents([tmp_path / "blank.txt"])


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.txt"
    path.write_text("Secret.\n")

    def refuse(p):  # what a file without read permission does (the tests may run as root, who reads anything)
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr("bert_fast.data.corpus._open_binary", refuse)
    with pytest.raises(CorpusError, match="cannot read corpus file .*Permission denied"):
        read_documents([path])


def test_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("One.\n")
    first = corpus_fingerprint([path])
    assert corpus_fingerprint([path]) == first
    path.write_text("One. Two.\n")
    assert corpus_fingerprint([path]) != first


def test_wiki_markup_cleaning():
    text = ("'''Alabama''' is a state in the southeastern region of the United States.\n"
            "==History==\n* a list item that is long enough to pass\n| table | cell | row | here | x\n"
            "Short caption\n''Italic'' words\u00a0and more words here.\n")
    assert wiki_paragraphs(text) == ["Alabama is a state in the southeastern region of the United States.",
                                     "Italic words and more words here."]


def test_wikipedia_dump_reader(tmp_path):
    pytest.importorskip("gensim")
    page = ("<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><id>1</id><text xml:space=\"preserve\">"
            "{body}</text></revision></page>")
    xml = ("<mediawiki xmlns=\"http://www.mediawiki.org/xml/export-0.10/\"><siteinfo><namespaces>"
           "<namespace key=\"0\" /></namespaces></siteinfo>"
           + page.format(t="Alpha", i=1, body="'''Alpha''' is the first letter of the Greek alphabet. It has a "
                                                "[[Value|value]] of one in the Greek numeral system.")
           + page.format(t="Old", i=2, body="#REDIRECT [[Alpha]]")
           + "</mediawiki>")
    path = tmp_path / "tiny-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode()))
    docs, _ = read_documents([path])
    assert docs == [["Alpha is the first letter of the Greek alphabet.",
                     "It has a value of one in the Greek numeral system."]]


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs gensim (the wiki extra)")
def test_embedded_wikipedia_sample_is_found():
    path = wikipedia_sample_path()
    assert path.is_file() and path.stat().st_size > 1_000_000
