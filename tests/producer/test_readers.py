"""Every kind of bad input line gets a rejection naming its line and field; good lines
pass through untouched."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from producer.readers import InputError, Record, Rejected, read_documents


def verdicts(path, max_bytes=1000, fmt=None):
    return list(read_documents(path, max_bytes, fmt))


def test_jsonl_good_lines_keep_id_text_and_metadata(write):
    path = write(
        "a.jsonl", json.dumps({"id": 7, "text": "héllo\u200f wörld", "meta": {"k": [1]}}) + "\n"
    )
    assert verdicts(path) == [Record(1, "7", "héllo\u200f wörld", {"meta": {"k": [1]}})]


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        (b"{oops", None, "invalid JSON"),
        (b"[1, 2]", None, "expected a JSON object"),
        (b'{"id": "a"}', "text", "missing or empty"),
        (b'{"text": ""}', "text", "missing or empty"),
        (b'{"text": 3}', "text", "must be a string"),
        (b'{"text": "a\\u0000b"}', "text", "NUL"),
        (b'{"text": "\\ud800"}', "text", "invalid Unicode"),
        (b'{"text": "caf\xe9"}', None, "invalid UTF-8"),
        (b'{"id": true, "text": "x"}', "id", "must be a string or an integer"),
        (b'{"text": "' + b"x" * 1001 + b'"}', "text", "over the limit of 1000"),
        (b'{"text": "x", "blob": "' + b"y" * 1001 + b'"}', "metadata", "over the limit"),
        (b"[" * 100_000 + b"]" * 100_000, None, "invalid JSON"),
    ],
)
def test_each_bad_jsonl_line_is_rejected_and_the_next_line_still_read(write, line, field, reason):
    path = write("bad.jsonl", b'{"text": "good one"}\n' + line + b'\n{"text": "good two"}\n')
    first, bad, last = verdicts(path)
    assert isinstance(first, Record) and isinstance(last, Record) and last.line == 3
    assert isinstance(bad, Rejected) and bad.line == 2 and bad.field == field
    assert reason in bad.reason
    assert bad.describe(path).startswith(f"{path}:2:")


def test_a_repeated_id_is_left_to_the_database(write):
    """The reader keeps no table of ids (it would grow with the file): the unique index
    rejects the second, naming the first line (test_cli's streaming test)."""
    path = write("d.jsonl", '{"id": "x", "text": "a"}\n\n{"id": "x", "text": "b"}\n')
    first, second = verdicts(path)
    assert (first.external_id, second.external_id) == ("x", "x")
    assert (first.line, second.line) == (1, 3)


def test_csv_with_quoted_newlines_reports_the_starting_line(write):
    path = write("c.csv", 'id,text,lang\n1,"two\nlines",en\n2,,en\n3,"three",en,extra\n4,ok,fr\n')
    result = verdicts(path)
    assert result[0] == Record(2, "1", "two\nlines", {"lang": "en"})
    assert (result[1].line, result[1].field) == (4, "text")
    assert result[2].line == 5 and "expected 3 fields" in result[2].reason
    assert result[3] == Record(6, "4", "ok", {"lang": "fr"})


def test_csv_without_text_column_is_an_input_error(write):
    with pytest.raises(InputError, match=r"c\.csv: CSV header has no 'text' column"):
        verdicts(write("c.csv", "id,body\n1,hello\n"))


def test_plain_text_ids_are_line_numbers_and_text_is_kept_verbatim(write):
    path = write(
        "t.txt", b"first\r\n\n  spaced  \n<script>alert(1)</script>'; DROP TABLE x;--\n\xff\xfe\n"
    )
    result = verdicts(path)
    assert [r.external_id for r in result[:3]] == ["1", "3", "4"]
    assert result[1].text == "  spaced  "
    assert result[2].text == "<script>alert(1)</script>'; DROP TABLE x;--"
    assert result[3] == Rejected(5, None, "invalid UTF-8")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        verdicts(tmp_path / "nope.jsonl")


def test_an_unknown_format_is_an_input_error(write):
    path = write("docs.jsonl", '{"text": "fine"}\n')
    with pytest.raises(InputError, match="--format xml: expected one of jsonl, csv, text"):
        verdicts(path, fmt="xml")


TEXT_ONLY = "explainq reads UTF-8 JSONL, CSV or plain text"


@pytest.mark.parametrize("name", ["ls.txt", "ls.jsonl", "ls.csv"])
def test_an_executable_is_refused_as_a_whole_in_every_format(write, name):
    path = write(name, Path(sys.executable).resolve().read_bytes()[:100_000])
    with pytest.raises(InputError) as raised:
        verdicts(path)
    assert str(raised.value) == (
        f"{path}: not a text file (NUL bytes in the first 8 KiB); {TEXT_ONLY}"
    )


@pytest.mark.parametrize("name", ["binary.jsonl", "binary.csv", "binary.txt"])
def test_random_bytes_are_refused_as_a_whole(write, name):
    path = write(name, random.Random(15).randbytes(20_000))  # a NUL in 256 bytes: too few
    with pytest.raises(InputError, match=r"not a text file \(\d+% of the bytes .* not valid UTF-8"):
        verdicts(path)


@pytest.mark.parametrize("name", ["junk.jsonl", "junk.csv", "junk.txt"])
def test_mostly_invalid_utf8_without_nul_is_refused_as_a_whole(write, name):
    junk = bytes(b or 1 for b in random.Random(15).randbytes(20_000))  # no NUL to go by
    path = write(name, junk)
    with pytest.raises(InputError, match=r"not a text file \(\d+% of the bytes in the first 8 KiB"):
        verdicts(path)


def test_a_few_nul_lines_are_bad_lines_not_a_binary_file(write):
    """A NUL or two among text is rejected line by line; a binary has them everywhere."""
    path = write("few.txt", b"first line\nnul \x00 byte\n" + b"more text\n" * 20)
    verdict = verdicts(path)
    assert [v.line for v in verdict if isinstance(v, Rejected)] == [2]


def test_a_legacy_8_bit_encoding_of_a_non_latin_script_is_refused(write):
    path = write("greek.txt", "Καλημέρα κόσμε, τι κάνεις σήμερα;\n".encode("iso-8859-7"))
    with pytest.raises(InputError, match=rf"greek\.txt: not a text file .*; {TEXT_ONLY}$"):
        verdicts(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bom.csv", "id,text\n1,hello\n".encode("utf-16")),
        ("be.txt", "hello\n".encode("utf-16-be")),  # no byte order mark
        ("le.jsonl", '{"text": "héllo wörld"}\n'.encode("utf-16-le")),
        ("wide.txt", "hello\n".encode("utf-32")),
    ],
)
def test_utf16_and_utf32_are_refused_with_a_hint_to_convert(write, name, content):
    path = write(name, content)
    with pytest.raises(InputError) as raised:
        verdicts(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: not UTF-8 but UTF-")
    assert f"{TEXT_ONLY}: convert it first" in message and "-t UTF-8" in message


def test_a_utf8_byte_order_mark_is_dropped(write):
    path = write("bom.csv", b"\xef\xbb\xbfid,text\n1,hello\n")
    assert verdicts(path) == [Record(2, "1", "hello", {})]


def test_valid_utf8_with_one_bad_line_is_still_read(write):
    # 3 KiB of non-ASCII UTF-8, one Latin-1 line, then a character cut by the 8 KiB sniff
    good = "".join(f"ligne {n}: déjà vu, 日本語\n" for n in range(100)).encode()
    start = good + "café crème\n".encode("latin-1")
    last = b"x" * (len(start) % 2 == 0) + "é".encode() * 8000
    assert (start + last)[8191:8193] == "é".encode()
    result = verdicts(write("mixed.txt", start + last), max_bytes=100_000)
    assert [type(r) for r in result] == [Record] * 100 + [Rejected, Record]
    assert result[100] == Rejected(101, None, "invalid UTF-8")


def test_a_directory_is_an_input_error_that_says_so(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError) as raised:
        verdicts(tmp_path / "adir")
    assert str(raised.value) == f"{tmp_path / 'adir'}: is a directory, not a file"


def test_a_missing_file_inside_a_file_is_no_such_file(write):
    with pytest.raises(InputError, match=r"a\.txt/b\.txt: no such file$"):
        verdicts(write("a.txt", "x\n") / "b.txt")


def test_an_unreadable_file_says_permission_denied(write, monkeypatch):
    path = write("secret.jsonl", '{"text": "hidden"}\n')

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # chmod 000 does not stop root
    with pytest.raises(InputError) as raised:
        verdicts(path)
    assert str(raised.value) == f"{path}: permission denied (this user cannot read it)"


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("empty.jsonl", b"", "the file is empty"),
        ("empty.csv", b"", "the file is empty"),
        ("empty.txt", b"", "the file is empty"),
        ("bom.jsonl", b"\xef\xbb\xbf", "the file is empty"),
        ("blank.jsonl", b"\n  \n\r\n", "only blank lines"),
        ("blank.txt", b"\n\t\n", "only blank lines"),
        ("blank.csv", b"\n\n", "only blank lines"),
        ("header.csv", b"id,text\n", "only a CSV header"),
        ("header_blank.csv", b"\nid,text\n\n,\n", "only a CSV header"),
    ],
)
def test_a_file_without_any_line_is_an_input_error(write, name, content, why):
    path = write(name, content)
    with pytest.raises(InputError) as raised:
        verdicts(path)
    assert str(raised.value) == f"{path}: no documents ({why})"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.jsonl", '{oops\n[1]\n{"id": "a"}\n'),
        ("bad.csv", "id,text\n1,\n2,a,b\n"),
        ("bad.txt", b"caf\xe9\nth\xe9\n"),  # Latin-1, but mostly ASCII: read line by line
    ],
)
def test_a_file_whose_every_line_is_rejected_still_yields_the_rejections(write, name, content):
    result = verdicts(write(name, content))
    assert result and all(isinstance(r, Rejected) for r in result)


def test_lines_past_the_sniffed_start_are_read_as_a_stream(write):
    path = write("long.txt", "".join(f"document {n}\n" for n in range(5000)))
    documents = read_documents(path, 1000)
    assert next(documents) == Record(1, "1", "document 0", {})
    assert len(list(documents)) == 4999
