import pytest

from bert_fast.data.sentences import split_sentences


@pytest.mark.parametrize("text, expected", [
    ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
    ("Dr. Smith met Mr. Jones at St. Paul. They talked.", ["Dr. Smith met Mr. Jones at St. Paul.", "They talked."]),
    ("It costs 3.50 dollars. Pi is 3.14159.", ["It costs 3.50 dollars.", "Pi is 3.14159."]),
    ("J. R. R. Tolkien wrote it. E.g. this one.", ["J. R. R. Tolkien wrote it.", "E.g. this one."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("Wait... What happened? (Nobody knew.) Next.", ["Wait...", "What happened?", "(Nobody knew.)", "Next."]),
    ("lower case after a stop. is not a new sentence", ["lower case after a stop. is not a new sentence"]),
    ("It grew in 1990. 2001 was worse.", ["It grew in 1990.", "2001 was worse."]),
    ("The U.S. Army and the U.K. Navy.", ["The U.S. Army and the U.K. Navy."]),
    ("  spaced   out\ttext.  Second  ", ["spaced out text.", "Second"]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_keeps_every_word():
    text = "Alpha beta. Gamma delta? Epsilon! Zeta eta theta. Iota."
    assert " ".join(split_sentences(text)) == text
