"""Readers of the official layouts, and the clear errors bad files get."""

import bz2
import gzip
import json

import pytest

from bert_fast.errors import DataError
from bert_fast.finetune.readers import read_conll, read_swag, read_table


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_sst2_layout_with_unbalanced_quotes(tmp_path):
    # GLUE's TSVs are read without quoting: a lone quote stays part of the sentence
    path = write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s a "great film\t1\nawful .\t0\n')
    rows = read_table(path)
    assert [r.texts for r in rows] == [('it \'s a "great film',), ("awful .",)]
    assert [r.label for r in rows] == ["1", "0"]
    assert rows[1].where == "train.tsv:3"


def test_mrpc_and_stsb_layouts_are_recognised(tmp_path):
    mrpc = write(tmp_path / "mrpc.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA b .\tA c .\n")
    assert read_table(mrpc)[0].texts == ("A b .", "A c .") and read_table(mrpc)[0].label == "1"
    stsb = write(tmp_path / "sts.tsv", "index\tgenre\tsentence1\tsentence2\tscore\n0\tnews\tx y\tx z\t3.800\n")
    assert read_table(stsb)[0].texts == ("x y", "x z") and read_table(stsb)[0].label == "3.800"


def test_cola_without_header_by_column_index(tmp_path):
    path = write(tmp_path / "cola.tsv", "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
                                        "gj04\t0\t*\tThe more we study verbs, the crazier they get get.\n")
    rows = read_table(path, text_columns=["3"], label_column="1", header=False)
    assert rows[0].texts == ("The sailors rode the breeze clear of the rocks.",)
    assert [r.label for r in rows] == ["1", "0"]


def test_a_table_without_header_read_with_one_gets_a_hint(tmp_path):
    path = write(tmp_path / "cola.tsv", "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
                                        "gj04\t0\t*\tThe more we study verbs, the crazier they get get.\n")
    hint = "its first row looks like data, not a header: if the file has no header row, pass --no-header"
    with pytest.raises(DataError, match=f"cannot tell the text column.*; {hint}"):
        read_table(path)
    with pytest.raises(DataError, match=f"no column 'sentence'.*; {hint}"):
        read_table(path, text_columns=["sentence"], label_column="label")
    headed = write(tmp_path / "sst.tsv", "sentence\tlabel\nfine words\t1\n")
    with pytest.raises(DataError, match=r"no column 'text'; its columns are \['sentence', 'label'\]$"):
        read_table(headed, text_columns=["text"])  # a real header: no hint


def test_csv_jsonl_and_compressed(tmp_path):
    csv_path = write(tmp_path / "d.csv", 'text,label\n"a, quoted, text",pos\nplain,neg\n')
    assert read_table(csv_path)[0].texts == ("a, quoted, text",)
    jsonl = write(tmp_path / "d.jsonl", json.dumps({"text": "hi", "label": 1}) + "\n\n"
                  + json.dumps({"text": "yo", "label": 0}) + "\n")
    assert [(r.texts, r.label) for r in read_table(jsonl)] == [(("hi",), "1"), (("yo",), "0")]
    with gzip.open(tmp_path / "d.tsv.gz", "wt") as f:
        f.write("sentence\tlabel\nzipped\t1\n")
    assert read_table(tmp_path / "d.tsv.gz")[0].texts == ("zipped",)
    with bz2.open(tmp_path / "d.csv.bz2", "wt") as f:
        f.write("review,label\nbzipped,1\n")
    assert read_table(tmp_path / "d.csv.bz2")[0].texts == ("bzipped",)


def test_table_errors_name_the_problem(tmp_path):
    path = write(tmp_path / "t.tsv", "words\tlabel\nhello\t1\n")
    with pytest.raises(DataError, match="cannot tell the text column"):
        read_table(path)
    with pytest.raises(DataError, match=r"no column 'sentence'.*\['words', 'label'\]"):
        read_table(path, text_columns=["sentence"])
    nolabel = write(tmp_path / "n.tsv", "index\tsentence\n0\thello\n")
    with pytest.raises(DataError, match="no label column"):
        read_table(nolabel)
    assert read_table(nolabel, require_label=False)[0].label is None  # a GLUE test file
    ragged = write(tmp_path / "r.tsv", "sentence\tlabel\nhello\t1\textra\n")
    with pytest.raises(DataError, match=r"r.tsv:2: 3 fields, the header has 2"):
        read_table(ragged)
    with pytest.raises(DataError, match="no such data file"):
        read_table(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_table(write(tmp_path / "x.parquet", ""))
    bad_json = write(tmp_path / "b.jsonl", '{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="b.jsonl:2"):
        read_table(bad_json)
    missing_field = write(tmp_path / "m.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="m.jsonl:2: missing label field"):
        read_table(missing_field)


def test_conll_layouts(tmp_path):
    path = write(tmp_path / "d.conll", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                                       "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\t\n\nLondon\tB-LOC\n")
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"], ["London"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert sentences[1].where == "d.conll:6"
    untagged = read_conll(write(tmp_path / "u.conll", "a\nb\n\nc\n"))
    assert [s.tags for s in untagged] == [None, None]
    with pytest.raises(DataError, match="some lines have a tag"):
        read_conll(write(tmp_path / "m.conll", "a O\nb\n"))
    with pytest.raises(DataError, match="no sentences"):
        read_conll(write(tmp_path / "e.conll", "\n\n"))


def test_swag_layout_and_errors(tmp_path):
    header = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
    path = write(tmp_path / "s.csv", header + '0,v,1,x,"He sat down.",He,gold,reads.,"eats, slowly.",runs.,sings.,1\n')
    (example,) = read_swag(path)
    assert example.context == "He sat down."
    assert example.endings == ["He reads.", "He eats, slowly.", "He runs.", "He sings."]
    assert example.label == 1
    bad = write(tmp_path / "b.csv", header + "0,v,1,x,a,b,gold,c,d,e,f,4\n")
    with pytest.raises(DataError, match=r"b.csv:2: label '4' is not a choice index in 0..3"):
        read_swag(bad)
    with pytest.raises(DataError, match="SWAG needs columns"):
        read_swag(write(tmp_path / "w.csv", "sent1,ending0\na,b\n"))
    test = write(tmp_path / "t.csv", header.replace(",label", "") + "0,v,1,x,a,b,gold,c,d,e,f\n")
    assert read_swag(test, require_label=False)[0].label is None
    with pytest.raises(DataError, match="no label column"):
        read_swag(test)
