"""Fuzzing the two importers through their public interfaces (hypothesis, bounded and
derandomised so CI is repeatable): random bytes, random unicode, byte order marks, odd
line endings, NULs, huge fields, broken CSV quoting and wrong headers. Nothing may
crash or answer 500; every rejection is a problem+json with a detail, and every bad CSV
row is reported with its line and kind."""
from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.domain import article_import, articles
from shared.errors import DomainError

PROBLEM = "application/problem+json"
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
BOMS = [b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]
NEWLINES = ["\n", "\r\n", "\r", "\n\n\n"]
HUGE = "x" * 200_000  # beyond the csv module's default field limit (131,072)
CSV_COLUMNS = "external_id,email,first_name,last_name,department,team,manager_external_id,timezone"
ODD_CELLS = ['"unterminated', 'a"b', '""', '"x,y"', "\x00", "=cmd|' /C calc'!A0", "not-a-tz", "Europe/London", "a@b.example",
             "manager-of-self", "é" * 300, "\u202e", "\ud7ff"]


def _encode(text: str, encoding: str, bom: bytes) -> bytes:
    return bom + text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")


text_documents = st.builds(
    lambda lines, newline: newline.join(lines),
    st.lists(st.one_of(st.text(max_size=120), st.sampled_from(["About the author", "Written by Calm Co.", "Learn more", "<h1>T</h1>",
                                                                "# Title", "<script>alert(1)</script>", "&#0;", "<p", "\x00", ""])),
             max_size=30),
    st.sampled_from(NEWLINES),
)


@FUZZ
@given(document=text_documents, fmt=st.sampled_from(["text", "markdown", "html"]))
@example(document="\r" * 5000 + "x", fmt="text")
@example(document="<" * 10000, fmt="html")
@example(document="<div>" * 3000, fmt="html")
def test_recognise_never_crashes(document, fmt):
    found = article_import.recognise(document, fmt)
    assert isinstance(found.title, str) and isinstance(found.body_source, str) and len(found.fingerprint) == 64


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=3000), st.builds(_encode, text_documents, st.sampled_from(["utf-8", "utf-16", "latin-1"]), st.sampled_from(BOMS))),
    name=st.sampled_from(["a.txt", "b.md", "c.html", "d.pdf", "noext", "", "../../etc/passwd.txt", "x.TXT"]),
)
def test_article_upload_check_accepts_or_rejects_with_a_clear_error(data, name):
    try:
        fmt, decoded = articles.check_upload(articles.Upload(name, data))
    except DomainError as error:
        assert error.status in (413, 415, 422) and error.detail
        return
    article_import.recognise(decoded, fmt)


def _post_article_files(client, tenant, files):  # noqa: ANN001
    return client.post("/api/v1/articles/import", data={"files": [(io.BytesIO(d), n) for n, d in files]},
                       content_type="multipart/form-data", headers=tenant.headers)


@FUZZ
@given(files=st.lists(st.tuples(st.sampled_from(["a.txt", "b.md", "c.html", "d.exe", ""]),
                                st.one_of(st.binary(max_size=2000),
                                          st.builds(_encode, text_documents, st.just("utf-8"), st.sampled_from(BOMS)))),
                      min_size=1, max_size=3))
def test_article_import_endpoint_answers_every_upload_cleanly(client, tenant, files):
    response = _post_article_files(client, tenant, files)
    assert response.status_code in (200, 201, 413, 415, 422), response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        assert response.mimetype == PROBLEM and response.get_json()["detail"]
    else:
        results = response.get_json()["results"]
        assert len(results) == len(files)
        for result in results:
            stored = client.get(f"/api/v1/articles/{result['article_id']}", headers=tenant.headers).get_json()
            assert "<script" not in stored["body_html"].lower()


cells = st.one_of(st.text(max_size=40), st.sampled_from(ODD_CELLS))
csv_rows = st.lists(st.lists(cells, max_size=12).map(",".join), max_size=15)
csv_headers = st.one_of(
    st.sampled_from([CSV_COLUMNS, CSV_COLUMNS + ",locale,digest_opt_in", CSV_COLUMNS.upper(), "external_id,email", "",
                     CSV_COLUMNS + ",external_id", '"external_id,email', CSV_COLUMNS.replace(",", ";")]),
    st.text(max_size=60),
)
csv_texts = st.builds(lambda header, rows, newline: newline.join([header, *rows]), csv_headers, csv_rows, st.sampled_from(NEWLINES))
csv_bodies = st.one_of(
    st.builds(_encode, csv_texts, st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]), st.sampled_from(BOMS)),
    st.binary(max_size=3000),
)


def _assert_clean_import_answer(response) -> None:  # noqa: ANN001
    assert response.status_code in (201, 413, 415, 422), response.get_data(as_text=True)[:500]
    body = response.get_json()
    if response.status_code != 201:
        assert response.mimetype == PROBLEM and body["detail"]
        return
    assert body["status"] in ("done", "failed")
    for error in body["errors"]:
        assert error["line"] >= 1 and error["kind"] and error["message"]
    assert body["error_count"] >= len(body["errors"])


@FUZZ
@given(data=csv_bodies, mode=st.sampled_from(["partial", "atomic", "dry_run"]), as_file=st.booleans())
@example(data=f"{CSV_COLUMNS}\nE1,{HUGE}@x.example,A,B,,,,UTC\n".encode(), mode="partial", as_file=False)
@example(data=f'{CSV_COLUMNS}\nE1,"{HUGE}\n'.encode(), mode="partial", as_file=True)
@example(data=b"\x00" * 5000, mode="atomic", as_file=False)
@example(data=f"\ufeff{CSV_COLUMNS}\r\nE1,e1@x.example,A,B,,,E1,UTC\r\n".encode(), mode="partial", as_file=True)
def test_employee_csv_import_answers_every_file_cleanly(client, tenant, data, mode, as_file):
    url = f"/api/v1/employees/import?mode={mode}"
    if as_file:
        response = client.post(url, data={"file": (io.BytesIO(data), "hris.csv")}, content_type="multipart/form-data", headers=tenant.headers)
    else:
        response = client.post(url, data=data, content_type="text/csv", headers=tenant.headers)
    _assert_clean_import_answer(response)


@pytest.mark.parametrize("header", ["", "external_id,email", "nonsense"])
def test_wrong_header_is_reported_as_bad_header(client, tenant, header):
    response = client.post("/api/v1/employees/import", data=f"{header}\nE1,e1@x.example\n".encode(), content_type="text/csv", headers=tenant.headers)
    _assert_clean_import_answer(response)
    kinds = {e["kind"] for e in response.get_json().get("errors", [])}
    assert response.status_code == 422 or "bad_header" in kinds
