"""Every kind of bad input line gets a rejection naming its line and field; good lines
pass through untouched."""

from __future__ import annotations

import json

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


def test_duplicate_ids_name_the_first_line(write):
    path = write("d.jsonl", '{"id": "x", "text": "a"}\n\n{"id": "x", "text": "b"}\n')
    first, dup = verdicts(path)
    assert first.external_id == "x"
    assert (dup.line, dup.field) == (3, "id") and "first on line 1" in dup.reason


def test_csv_with_quoted_newlines_reports_the_starting_line(write):
    path = write("c.csv", 'id,text,lang\n1,"two\nlines",en\n2,,en\n3,"three",en,extra\n4,ok,fr\n')
    result = verdicts(path)
    assert result[0] == Record(2, "1", "two\nlines", {"lang": "en"})
    assert (result[1].line, result[1].field) == (4, "text")
    assert result[2].line == 5 and "expected 3 fields" in result[2].reason
    assert result[3] == Record(6, "4", "ok", {"lang": "fr"})


def test_csv_without_text_column_is_an_input_error(write):
    with pytest.raises(InputError, match="no 'text' column"):
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
