"""Issue 7, point 9: the input probes on the public embed endpoints (/e/prompt, /p/<token>,
/t/<id>). Each was a 500, a silent truncation, a raw echo or unbounded work before."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from sqlalchemy import func, select

from app import signing
from app.extensions import db
from app.models import Case, Impression, Outbox, Response

from .conftest import ORIGIN, free_port, public_prompt, verified_token
from .live_server import serving, wsgi_server

ROOT = Path(__file__).resolve().parent.parent


def stored(app) -> tuple[int, int, int, int]:
    """(responses, cases, outbox rows, impressions)."""
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(m))
                     for m in (Response, Case, Outbox, Impression))


def issue(client, body: str):
    """POST a raw body to /e/prompt as the widget does (text/plain, allowed Origin)."""
    return client.post("/e/prompt", data=body, headers={"Origin": ORIGIN,
                                                        "Content-Type": "text/plain"})


def ascii_token(for_site, **payload: Any) -> str:
    """A merchant token whose JSON is ASCII with \\u escapes (Python's json default), which
    is how a lone surrogate travels inside a genuinely signed payload."""
    data = {"site": for_site.public_key, "moment": "delivery", "channel": "email", **payload}
    return URLSafeTimedSerializer(for_site.signing_secrets[-1], salt="closeloop.prompt.v1",
                                  serializer=json).dumps(data)


# -- 1. deep nesting -------------------------------------------------------------------------

NESTED = {"arrays": "[" * 1000, "objects": '{"a":' * 1000,
          "arrays_closed": "[" * 1000 + "]" * 1000,
          "in_a_field": '{"site": "x", "skus": ' + "[" * 1000 + "]" * 1000 + "}"}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_deep_json_to_issuer_is_400(app, client, site, name):
    """1,000 nested [ or {"a": in the /e/prompt body: a 400 JSON error saying why, no 500."""
    r = issue(client, NESTED[name])
    assert r.status_code == 400 and r.is_json
    assert "levels deep" in r.json["message"]
    assert stored(app) == (0, 0, 0, 0)


@pytest.mark.parametrize("name", sorted(NESTED))
def test_deep_json_to_prompt_is_400(app, client, site, name):
    """The same bodies as a JSON answer to /p/<token>: 400 JSON, nothing stored."""
    path = public_prompt(client, site)
    r = client.post(path, data=NESTED[name], content_type="application/json")
    assert r.status_code == 400 and r.is_json
    assert "levels deep" in r.json["message"]
    assert stored(app)[:3] == (0, 0, 0)


@pytest.mark.parametrize("body", [
    "[" * (16 * 1024 - 1),  # the whole allowed size, nested
    "[" + "0," * (8 * 1024 - 2) + "0]",  # the whole allowed size, flat
    '{"site": "pk", "moment": "checkout", "skus": [' + '"a",' * 4000 + '"a"]}',
])
def test_huge_json_under_the_limit_is_400(app, client, site, body):
    """Bodies just under EMBED_MAX_BODY, nested or flat: 400 JSON, not 500 or 413."""
    assert len(body) <= app.config["EMBED_MAX_BODY"]
    r = issue(client, body)
    assert r.status_code == 400 and r.is_json
    path = public_prompt(client, site)
    r = client.post(path, data=body, content_type="application/json")
    assert r.status_code == 400 and r.is_json
    assert stored(app)[:3] == (0, 0, 0)


def test_nesting_a_valid_answer_needs_is_fine(app, client, site):
    """The strict parser accepts what the widget sends: an object with a list of SKUs."""
    path = public_prompt(client, site, skus=["A-1", "B-2"], order="1001")
    r = client.post(path, json={"rating": 4, "comment": "[{fine}]"})
    assert r.status_code == 201, r.get_data(as_text=True)
    assert stored(app)[:3] == (1, 1, 1)


# -- 2. lone surrogates ----------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("order", '"\\ud800"'), ("skus", '["ok", "\\ud800"]'), ("skus", '"A,\\udfff"'),
    ("vid", '"\\ud800"'), ("url", '"https://shop.example/\\ud800"'), ("moment", '"\\ud800"'),
    ("site", '"\\ud800"'), ("customer", '"c\\udc00"'), ("\\ud800", '"key"'),
])
def test_lone_surrogate_to_issuer_is_400(app, client, site, field, value):
    """A lone surrogate escape anywhere in the /e/prompt body: 400 naming the field."""
    body = (f'{{"site": "{site.public_key}", "moment": "checkout", "vid": "{uuid.uuid4().hex}",'
            f' "{field}": {value}}}')
    r = issue(client, body)
    assert r.status_code == 400 and r.is_json, r.get_data(as_text=True)
    assert "lone UTF-16 surrogate" in r.json["message"]
    assert stored(app) == (0, 0, 0, 0)


@pytest.mark.parametrize("field", ["comment", "rating", "website"])
def test_lone_surrogate_in_json_answer_is_400(app, client, site, field):
    """A lone surrogate in any field of a JSON answer: 400 naming it, nothing stored."""
    path = public_prompt(client, site)
    body = {"rating": 4, "comment": "ok"}
    raw = json.dumps({**body, field: "PLACEHOLDER"}).replace("PLACEHOLDER", "x\\ud800")
    r = client.post(path, data=raw, content_type="application/json")
    assert r.status_code == 400 and r.is_json
    assert field in r.json["message"] and "surrogate" in r.json["message"]
    assert stored(app)[:3] == (0, 0, 0)


def test_valid_surrogate_pairs_are_text(app, client, site):
    """An escaped pair (an emoji) is valid text and is stored as such."""
    path = public_prompt(client, site, order="\U0001f600-1")
    raw = '{"rating": 4, "comment": "great \\ud83d\\ude00"}'
    assert client.post(path, data=raw, content_type="application/json").status_code == 201
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.comment, r.order_ref) == ("great \U0001f600", "\U0001f600-1")


@pytest.mark.parametrize("payload", [
    {"order": "\ud800"}, {"skus": ["A", "\udbff"]}, {"customer": "\udc00"},
    {"url": "https://shop.example/\ud800"}, {"n": "nonce-0001\ud800"},
    {"email": "a\ud800@shop.example"}, {"locale": "\ud800"}, {"extra": {"deep": "\ud800"}},
])
def test_lone_surrogate_in_signed_token_is_400(app, client, site, payload):
    """A genuinely signed token whose payload holds a lone surrogate: 400 on every route
    (GET, form POST, JSON POST, the widget's issuer), nothing stored."""
    token = ascii_token(site, **payload)
    assert client.get(f"/p/{token}").status_code == 400
    assert client.get(f"/p/{token}?rating=9").status_code == 400
    assert client.post(f"/p/{token}", data={"rating": "9"}).status_code == 400
    r = client.post(f"/p/{token}", json={"rating": 9})
    assert r.status_code == 400 and r.json["error"] == "invalid"
    assert "surrogate" in r.json["message"]
    r = issue(client, json.dumps({"token": token, "vid": "v"}))
    assert r.status_code == 400 and "surrogate" in r.json["message"]
    assert stored(app) == (0, 0, 0, 0)


@pytest.mark.parametrize("key", ["site", "moment"])
def test_lone_surrogate_in_token_site_or_moment_is_400(app, client, site, key):
    """The site or moment a token names (read before verification) with a lone surrogate."""
    token = ascii_token(site, **{key: "\ud800"})
    assert client.get(f"/p/{token}").status_code == 400
    r = client.post(f"/p/{token}", json={"rating": 9})
    assert r.status_code == 400 and r.json["error"] == "invalid"
    assert stored(app) == (0, 0, 0, 0)


# -- 3. compressed payloads ------------------------------------------------------------------


def bomb(site, key: str = "not-the-secret", salt: str = "closeloop.prompt.v1",
         size: int = 3_000_000) -> str:
    """A ~4 kB token whose zlib payload inflates to `size` bytes (valid site and moment)."""
    s = URLSafeTimedSerializer(key, salt=salt)
    head = json.dumps({"site": site.public_key, "moment": "delivery", "pad": ""})[:-2]
    raw = (head + " " * size + '"}').encode()
    assert json.loads(raw)["moment"] == "delivery"
    return s.make_signer().sign(b"." + base64_encode(zlib.compress(raw, 9))).decode()


class Inflated:
    """Counts every byte zlib inflates in this process (decompress and decompressobj)."""

    def __init__(self, monkeypatch) -> None:
        self.total = 0
        real_decompress, real_obj = zlib.decompress, zlib.decompressobj
        counter = self

        def decompress(data, *args, **kw):
            out = real_decompress(data, *args, **kw)
            counter.total += len(out)
            return out

        class Obj:
            def __init__(self, *args: Any, **kw: Any) -> None:
                self._d = real_obj(*args, **kw)

            def decompress(self, data, *args, **kw):
                out = self._d.decompress(data, *args, **kw)
                counter.total += len(out)
                return out

            def flush(self, *args, **kw):
                out = self._d.flush(*args, **kw)
                counter.total += len(out)
                return out

            def __getattr__(self, name: str) -> Any:
                return getattr(self._d, name)

        monkeypatch.setattr(zlib, "decompress", decompress)
        monkeypatch.setattr(zlib, "decompressobj", Obj)


def test_unsigned_compression_bomb_is_refused_unread(app, client, site, monkeypatch):
    """An unsigned 4 kB token inflating to 3 MB: 400 everywhere, and no more than
    MAX_PAYLOAD_BYTES (+1 to see it is over) is ever inflated for it."""
    token = bomb(site)
    assert len(token) <= signing.MAX_TOKEN_CHARS
    assert signing.peek(token) is None
    inflated = Inflated(monkeypatch)
    for _ in range(3):
        assert client.get(f"/p/{token}").status_code == 400
        r = client.post(f"/p/{token}", json={"rating": 9})
        assert r.status_code == 400 and r.json["message"] == "this feedback link is not valid"
        r = issue(client, json.dumps({"token": token, "vid": "v"}))
        assert r.status_code == 400 and r.json["message"] == "this feedback link is not valid"
    assert 0 < inflated.total <= 9 * (signing.MAX_PAYLOAD_BYTES + 1)
    assert stored(app) == (0, 0, 0, 0)


def test_signed_compression_bombs_are_refused(app, client, site, monkeypatch):
    """Genuinely signed payloads past the cap are refused too, inflated no further than it:
    a merchant's (its site is only found by peeking, which gives up at the cap) and one
    signed with the app's own key (refused after the signature check, saying why)."""
    merchant = bomb(site, key=site.signing_secrets[-1])
    ours = bomb(site, key=app.config["SECRET_KEY"], salt=signing.PUBLIC_PROMPT)
    inflated = Inflated(monkeypatch)
    r = client.post(f"/p/{merchant}", json={"rating": 9})
    assert r.status_code == 400 and r.json["message"] == "this feedback link is not valid"
    assert inflated.total <= signing.MAX_PAYLOAD_BYTES + 1
    r = client.post(f"/p/{ours}", json={"rating": 9})
    assert r.status_code == 400 and "larger than 32768 bytes" in r.json["message"]
    assert inflated.total <= 2 * (signing.MAX_PAYLOAD_BYTES + 1)
    assert stored(app) == (0, 0, 0, 0)


def test_compressed_tokens_still_work(app, client, site):
    """A legitimate token big enough to be compressed (20 SKUs of 100 chars) is answered."""
    skus = [f"{i:02d}" + "S" * 98 for i in range(20)]
    token = verified_token(site, skus=skus, order="1001")
    assert token.startswith(".")
    assert client.post(f"/p/{token}", data={"rating": "9"}).status_code == 303
    with app.app_context():
        assert db.session.scalars(select(Response)).one().skus == skus


def test_public_tokens_are_verified_before_decoding(app, client, site, monkeypatch):
    """Our own script-tag tokens are checked with the app's keys first: their payload is
    never read unverified."""
    path = public_prompt(client, site)

    def no_peek(token: str) -> None:
        raise AssertionError("peeked at a public token")

    monkeypatch.setattr(signing, "peek", no_peek)
    assert client.get(path).status_code == 200
    assert client.post(path, data={"rating": "4"}).status_code == 303
    assert stored(app)[:3] == (1, 1, 1)


# -- 4. chunked bodies through a real server --------------------------------------------------


@pytest.fixture
def live(app) -> Iterator[int]:
    """The app behind werkzeug's HTTP server on 127.0.0.1 (it de-chunks request bodies and
    sets wsgi.input_terminated, as gunicorn does); yields the port."""
    server = wsgi_server(app)
    with serving(server):
        yield server.server_address[1]


@pytest.fixture
def gunicorn(app, tmp_path) -> Iterator[int]:
    """The shipped server: gunicorn with gunicorn.conf.py (one gthread worker) on the test
    app's SQLite database and secret; yields the port once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CLOSELOOP_"))}
    env.pop("REDIS_URL", None)
    env.update(SECRET_KEY=app.config["SECRET_KEY"],
               DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
               CLOSELOOP_INSTANCE_PATH=str(tmp_path / "instance"),
               CLOSELOOP_PUBLIC_BASE_URL=f"http://localhost:{port}")
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the listening socket (or the server's death)
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def chunked(port: int, path: str, body: bytes, content_type: str,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST `body` with Transfer-Encoding: chunked (4 kB chunks, no Content-Length), to the
    host name the test app trusts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
        conn.request("POST", path, body=chunks, encode_chunked=True,
                     headers={"Host": "localhost", "Content-Type": content_type,
                              "Transfer-Encoding": "chunked", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(params=["werkzeug", "gunicorn"])
def server_port(request) -> int:
    """Each real server the app runs under: werkzeug's (make run) and gunicorn (production)."""
    return request.getfixturevalue("live" if request.param == "werkzeug" else "gunicorn")


def test_chunked_bodies_over_the_limit_are_413(app, client, site, server_port):
    """Chunked bodies past EMBED_MAX_BODY are 413 (not truncated into a 400 or an answer)."""
    live = server_port
    limit = app.config["EMBED_MAX_BODY"]
    path = public_prompt(client, site)
    big = "x" * (limit + 10)
    issuer = json.dumps({"site": site.public_key, "moment": "checkout", "vid": "v",
                         "pad": big}).encode()
    status, body = chunked(live, "/e/prompt", issuer, "text/plain", {"Origin": ORIGIN})
    assert status == 413 and json.loads(body)["error"] == "request_entity_too_large"
    answer = json.dumps({"rating": 4, "comment": "hi", "pad": big}).encode()
    status, body = chunked(live, path, answer, "application/json")
    assert status == 413 and json.loads(body)["error"] == "request_entity_too_large"
    # A form whose first 16 kB alone would be a valid answer: truncating it would store it.
    form = f"rating=4&comment=hi&website=&pad={big}".encode()
    status, _ = chunked(live, path, form, "application/x-www-form-urlencoded")
    assert status == 413
    assert stored(app)[:3] == (0, 0, 0)


def test_chunked_bodies_under_the_limit_are_read_whole(app, client, site, server_port):
    """A chunked answer within the limit is parsed whole and stored once."""
    live = server_port
    path = public_prompt(client, site)
    comment = "z" * 1000
    form = f"pad={'p' * 12000}&rating=4&comment={comment}".encode()
    assert len(form) < app.config["EMBED_MAX_BODY"]
    status, _ = chunked(live, path, form, "application/x-www-form-urlencoded")
    assert status == 303
    with app.app_context():
        assert db.session.scalars(select(Response)).one().comment == comment


# -- 5. control characters in the comment ----------------------------------------------------


@pytest.mark.parametrize("comment,message", [
    ("hello\x00world", "NUL"),
    ("bell\x07 and escape\x1b[31m", "control character (U+0007)"),
    ("form\x0cfeed", "control character (U+000C)"),
    ("del\x7f", "control character (U+007F)"),
])
def test_control_characters_in_comment_are_refused_not_echoed(app, client, site, comment,
                                                              message):
    """A NUL or other C0 control in the comment: 400 with a field error; the re-rendered
    textarea holds the text without them (never a raw NUL)."""
    path = public_prompt(client, site)
    r = client.post(path, data={"rating": "4", "comment": comment})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and message in page
    assert not any(ch in page for ch in "\x00\x07\x0c\x1b\x7f")
    visible = "".join(ch for ch in comment if ch >= " " and ch != "\x7f")
    assert f">{visible}</textarea>" in page
    r = client.post(path, json={"rating": 4, "comment": comment})
    assert r.status_code == 400 and message in json.dumps(r.json)
    assert stored(app)[:3] == (0, 0, 0)


def test_control_characters_in_added_comment_are_not_echoed(app, client, site):
    """The thank-you page's "anything to add?" refuses a NUL and never echoes it."""
    path = public_prompt(client, site)
    thanks = client.post(path, data={"rating": "4"}).headers["Location"]
    r = client.post(thanks, data={"comment": "more\x00text"})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "\x00" not in page and "NUL" in page
    with app.app_context():
        assert db.session.scalars(select(Response)).one().comment is None


def test_tabs_and_newlines_in_comment_are_kept(app, client, site):
    """Tab, LF and CR stay allowed (CRLF normalised to LF, as before)."""
    path = public_prompt(client, site)
    r = client.post(path, data={"rating": "4", "comment": "a\tb\r\nc\nd"})
    assert r.status_code == 303
    with app.app_context():
        assert db.session.scalars(select(Response)).one().comment == "a\tb\nc\nd"


# -- 6. control characters in ids (public and verified) --------------------------------------

IDS = [
    ("order", "1001\r\nBcc: victim@evil.example"), ("order", "10\n01"),
    ("skus", ["A-1", "B\r\n2"]), ("skus", "A-1,B\n2"), ("sku", "A\x1b[31m"),
    ("customer", "c-1\x00"), ("customer", "c\u20281"), ("url", "https://shop.example/a\nb"),
    ("order", "1\x852"),
]


@pytest.mark.parametrize("field,value", IDS)
def test_control_characters_in_public_context_are_400(app, client, site, field, value):
    """CR/LF and other controls in SKUs, order, customer or URL from the page: 400 saying
    so, no impression, no token."""
    body = {"site": site.public_key, "moment": "checkout", "vid": uuid.uuid4().hex,
            field: value}
    r = issue(client, json.dumps(body))
    assert r.status_code == 400 and r.is_json, r.get_data(as_text=True)
    assert "control character" in r.json["message"]
    assert stored(app) == (0, 0, 0, 0)


@pytest.mark.parametrize("field,value", IDS + [("n", "nonce\r\n0001")])
def test_control_characters_in_verified_tokens_are_400(app, client, site, field, value):
    """The same in a merchant-signed token: refused on every route, nothing stored."""
    token = verified_token(site, **{field: value})
    assert client.get(f"/p/{token}").status_code == 400
    r = client.post(f"/p/{token}", json={"rating": 9})
    assert r.status_code == 400 and "control character" in r.json["message"]
    assert client.post(f"/p/{token}", data={"rating": "9"}).status_code == 400
    r = issue(client, json.dumps({"token": token, "vid": "v"}))
    assert r.status_code == 400 and "control character" in r.json["message"]
    assert stored(app) == (0, 0, 0, 0)


def test_trailing_newline_in_keys_is_not_a_match(app, client, site):
    """A moment or locale with a trailing newline is not the moment or locale ("$" used to
    match before a final newline)."""
    body = {"site": site.public_key, "moment": "checkout\n", "vid": "v"}
    assert issue(client, json.dumps(body)).status_code == 400
    path = public_prompt(client, site, lang="tr\n")
    assert client.post(path, data={"rating": "4"}).status_code == 303
    with app.app_context():
        assert db.session.scalars(select(Response)).one().locale == "en"


def test_valid_ids_are_unchanged(app, client, site):
    """Non-ASCII SKUs, orders and customers, and surrounding whitespace (stripped), as before."""
    token = verified_token(site, skus=["ÇAY-1", "ЧАЙ-2"], order=" Sipariş-1001\r\n",
                           customer="müşteri-7", n="nonce-0001")
    assert client.post(f"/p/{token}", data={"rating": "9"}).status_code == 303
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.skus, r.order_ref, r.customer_ref, r.submission_id) == (
            ["ÇAY-1", "ЧАЙ-2"], "Sipariş-1001", "müşteri-7", "nonce-0001")
