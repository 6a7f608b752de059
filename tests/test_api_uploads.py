"""Photos over the admin API: per-photo enrollment results, identify, and every upload refusal.

A real daemon (``edge-face run``) serves these over TCP with a small body limit, so the limits
are exercised without sending hundreds of megabytes. Its ``TMPDIR`` is a folder of its own: no
upload may ever land there (a visitor's face is not written anywhere).
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from api_daemon import ApiDaemon, make_daemon, new_person
from mqtt_broker import Broker
from PIL import Image

FACES = Path(__file__).parent / "fixtures" / "faces"
LIMIT = 3 * 1024 * 1024  # [api] max_upload_bytes here: room for a photo over 1 MB


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """Under 200 bytes that claim 900 Mpx: decoding it would allocate 2.7 GB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))


def plain_png() -> bytes:
    """A grey picture: a valid image with no face in it."""
    buf = io.BytesIO()
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def photo(name: str) -> tuple[str, tuple[str, bytes, str]]:
    return ("image", (name, (FACES / name).read_bytes(), "image/jpeg"))


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
         module_broker: Broker) -> Iterator[ApiDaemon]:
    workdir = tmp_path_factory.mktemp("uploads")
    tmp = workdir / "tmp"
    tmp.mkdir()
    daemon = make_daemon(workdir, models_dir, module_broker, TMPDIR=str(tmp),
                         EDGE_FACE_API__MAX_UPLOAD_BYTES=str(LIMIT),
                         EDGE_FACE_API__MAX_FILES="3",
                         EDGE_FACE_API__AUTH_FAILURES_PER_MINUTE="1000")
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def barack(door: ApiDaemon) -> str:
    """The one person enrolled in this module (duplicates would make identify ambiguous)."""
    with door.admin() as api:
        pid = new_person(api, "Barack")
        r = api.post(f"/v1/persons/{pid}/faces", files=[photo("obama.jpg")])
        assert r.status_code == 201, r.text
        return pid


def test_enroll_answers_for_each_photo(door: ApiDaemon, barack: str) -> None:
    with door.admin() as api:
        files = [photo("obama2.jpg"), photo("biden.jpg"),
                 ("image", ("notes.txt", b"not a photo at all", "image/jpeg")),
                 photo("biden2.jpg")]
        r = api.post(f"/v1/persons/{barack}/faces", files=files[:3])
        assert r.status_code == 201, r.text
        body = r.json()
        assert [x["path"] for x in body["results"]] == ["obama2.jpg", "biden.jpg", "notes.txt"]
        first, other, text = body["results"]
        assert first["accepted"] and first["template_id"].startswith("t_")
        assert set(first["quality"]) >= {"size", "sharpness", "frontalness"}
        assert not other["accepted"] and "different person" in other["reason"]
        # Content is sniffed: the declared image/jpeg is not believed.
        assert not text["accepted"] and "not an image" in text["reason"]
        assert body["templates_added"] == 1
        assert {x["path"] for x in body["rejected"]} == {"biden.jpg", "notes.txt"}

        group = api.post(f"/v1/persons/{barack}/faces", files=files[3:])
        assert group.status_code == 422
        assert "several faces (2)" in group.json()["results"][0]["reason"]
        person = api.get(f"/v1/persons/{barack}").json()
        assert sorted(t["source"] for t in person["templates"]) == ["obama.jpg", "obama2.jpg"]


def test_enroll_with_no_usable_photo_is_422_with_reasons(door: ApiDaemon) -> None:
    with door.admin() as api:
        pid = new_person(api, "Nobody usable")
        r = api.post(f"/v1/persons/{pid}/faces", files=[
            ("image", ("grey.png", plain_png(), "image/png")),
            ("image", ("bomb.png", bomb_png(), "image/png"))])
        assert r.status_code == 422, r.text
        grey, bomb = r.json()["results"]
        assert "no face" in grey["reason"]
        assert "max_pixels" in bomb["reason"]
        assert api.get(f"/v1/persons/{pid}").json()["templates"] == []


def test_enroll_refusals_for_person_and_consent(door: ApiDaemon) -> None:
    with door.admin() as api:
        missing = api.post(f"/v1/persons/p_{'a' * 26}/faces", files=[photo("obama.jpg")])
        assert missing.status_code == 404
        pid = new_person(api, "Withdrawn")
        assert api.post(f"/v1/persons/{pid}/consents/withdraw").status_code == 200
        r = api.post(f"/v1/persons/{pid}/faces", files=[photo("biden.jpg")])
        assert r.status_code == 409 and "consent" in r.json()["detail"]


def test_the_same_face_under_two_ids_is_a_conflict(door: ApiDaemon) -> None:
    with door.admin() as api:
        first = new_person(api, "Joe")
        assert api.post(f"/v1/persons/{first}/faces",
                        files=[photo("biden.jpg")]).status_code == 201
        second = new_person(api, "Joe again")
        r = api.post(f"/v1/persons/{second}/faces", files=[photo("biden.jpg")])
        assert r.status_code == 409 and first in r.json()["detail"]
        assert api.get(f"/v1/persons/{second}").json()["templates"] == []
        forced = api.post(f"/v1/persons/{second}/faces", params={"force": "true"},
                          files=[photo("biden.jpg")])
        assert forced.status_code == 201 and forced.json()["warnings"]


def test_identify_names_only_the_enrolled(door: ApiDaemon, barack: str) -> None:
    with door.client(door.token("reader", "read")) as reader:
        r = reader.post("/v1/identify", files=[photo("obama3.jpg")])
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "obama3.jpg"
        (face,) = r.json()["faces"]
        assert (face["decision"], face["person_id"]) == ("match", barack)
        assert face["similarity"] > 0.5 and len(face["box"]) == 4
        assert "label" not in face  # [events] include_label is off
        empty = reader.post("/v1/identify", files=[("image", ("grey.png", plain_png(),
                                                              "image/png"))])
        assert empty.status_code == 200 and empty.json()["faces"] == []


@pytest.mark.parametrize("content, status, words", [
    (b"plain text, not a picture", 415, "not an image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, 415, "not an image"),
    (None, 413, "max_pixels"),
])
def test_identify_refuses_what_is_not_a_usable_photo(door: ApiDaemon, content: bytes | None,
                                                     status: int, words: str) -> None:
    data = bomb_png() if content is None else content
    with door.admin() as api:
        r = api.post("/v1/identify", files=[("image", ("x.jpg", data, "image/jpeg"))])
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_malformed_uploads_are_refused_with_what_is_wrong(door: ApiDaemon) -> None:
    with door.admin() as api:
        pid = new_person(api, "Malformed")
        url = f"/v1/persons/{pid}/faces"
        wrong_field = api.post(url, files=[("photo", ("a.jpg", b"x", "image/jpeg"))])
        assert wrong_field.status_code == 422 and "'photo'" in wrong_field.json()["detail"]
        no_file = api.post(url, files=[], data={}, headers={
            "content-type": "multipart/form-data; boundary=xyz"}, content=b"--xyz--\r\n")
        assert no_file.status_code == 422 and "no file" in no_file.json()["detail"]
        as_json = api.post(url, json={"image": "aGVsbG8="})
        assert as_json.status_code == 415
        garbage = api.post(url, content=b"--xyz\r\nnonsense", headers={
            "content-type": "multipart/form-data; boundary=xyz"})
        assert garbage.status_code == 422
        four = api.post(url, files=[photo("obama.jpg")] * 4)
        assert four.status_code == 413 and "at most 3 files" in four.json()["detail"]
        two = api.post("/v1/identify", files=[photo("obama.jpg")] * 2)
        assert two.status_code == 413 and "at most 1 file " in two.json()["detail"]
        assert api.get(f"/v1/persons/{pid}").json()["templates"] == []


def raw_exchange(door: ApiDaemon, head: str, body: bytes = b"") -> bytes:
    """Send a hand-made request and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", door.port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def request_head(door: ApiDaemon, path: str, **headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{door.port}",
             f"Authorization: Bearer {door.token('test-admin')}",
             "Content-Type: multipart/form-data; boundary=b", "Connection: close",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_bodies_over_the_limit_are_413_declared_or_not(door: ApiDaemon) -> None:
    # Declared far too big, or a client that waits for "100 Continue": answered from the
    # headers alone, before the client sends a byte of the body.
    for head in (request_head(door, "/v1/identify", Content_Length=str(3 * LIMIT)),
                 request_head(door, "/v1/identify", Content_Length=str(LIMIT + 1),
                              Expect="100-continue")):
        answer = raw_exchange(door, head)
        assert answer.startswith(b"HTTP/1.1 413 ") and str(LIMIT).encode() in answer
        assert b"100 Continue" not in answer

    # A little too big, sent whole by a client that reads only afterwards (httpx, requests):
    # it gets the reason, not a reset connection.
    with door.admin() as api:
        over = api.post("/v1/identify", files=[("image", ("big.jpg", b"\x00" * LIMIT,
                                                          "image/jpeg"))])
        assert over.status_code == 413 and str(LIMIT) in over.json()["detail"]

    # Chunked (no length): refused once the bytes received cross the limit.
    part = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
            + b"\x00" * LIMIT)
    chunked = f"{len(part):x}\r\n".encode() + part + b"\r\n0\r\n\r\n"
    answer = raw_exchange(door, request_head(door, "/v1/identify",
                                             Transfer_Encoding="chunked"), chunked)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]

    with door.admin() as api:
        big_json = api.post("/v1/persons", content=b"{" + b" " * LIMIT + b"}",
                            headers={"content-type": "application/json"})
        assert big_json.status_code == 413
        assert api.get("/healthz").status_code == 200  # and the daemon is still well


def test_uploads_touch_no_disk_and_no_log(door: ApiDaemon, barack: str) -> None:
    # Over 1 MB, where Starlette's UploadFile would spool to a temporary file. Trailing bytes
    # after the JPEG's end marker do not change the picture.
    marker = b"EDGE-FACE-UPLOAD-MARKER"
    heavy = (FACES / "obama2.jpg").read_bytes() + marker * (1_500_000 // len(marker))
    tmp = door.workdir / "tmp"
    before = {p.name for p in tmp.iterdir()}
    with door.admin() as api:
        assert api.patch(f"/v1/persons/{barack}",
                         json={"label": "Secret Label Xyzzy"}).status_code == 200
        r = api.post(f"/v1/persons/{barack}/faces",
                     files=[("image", ("heavy.jpg", heavy, "image/jpeg")), photo("obama3.jpg")])
        assert r.status_code == 201, r.text
        seen = api.post("/v1/identify", files=[("image", ("heavy.jpg", heavy, "image/jpeg"))])
        assert seen.status_code == 200 and seen.json()["faces"][0]["person_id"] == barack
    assert {p.name for p in tmp.iterdir()} == before
    for path in [p for p in door.workdir.rglob("*") if p.is_file()]:
        assert marker not in path.read_bytes(), path
    log = door.logs()
    assert "Xyzzy" not in log and "heavy.jpg" not in log
    # The access log names the route template, not the path (no person id), and no body.
    posted = [r for r in door.records() if r.get("route") in {"/v1/identify",
                                                              "/v1/persons/{person_id}/faces"}]
    assert len(posted) >= 2
    assert all(set(r) == {"time", "level", "logger", "msg", "method", "route", "status",
                          "duration_ms", "token_name", "client"} for r in posted), posted[0]


def test_upload_without_a_token_is_read_by_nobody(door: ApiDaemon) -> None:
    with door.client("not-a-token") as intruder:
        r = intruder.post("/v1/identify", files=[photo("obama.jpg")])
    assert r.status_code == 401
    with door.client(door.token("reader", "read")) as reader:
        r = reader.post("/v1/persons/per_x/faces", files=[photo("obama.jpg")])
    assert r.status_code == 403


def test_removing_one_template_stops_it_matching(door: ApiDaemon, barack: str) -> None:
    """``DELETE /v1/persons/{id}/faces/{template_id}``: receipt, audit, and out of the matcher."""
    with door.admin() as api:
        pid = new_person(api, "Look-alike")
        made = api.post(f"/v1/persons/{pid}/faces", params={"force": "true"},
                        files=[photo("obama2.jpg")])
        assert made.status_code == 201, made.text
        tid = made.json()["results"][0]["template_id"]
        url = f"/v1/persons/{pid}/faces/{tid}"
        with door.client(door.token("reader", "read")) as reader:
            refused = reader.delete(url)
            assert refused.status_code == 403 and "scope 'read'" in refused.json()["detail"]
        assert api.delete(f"/v1/persons/{pid}/faces/t_{'a' * 26}").status_code == 404
        assert api.delete(f"/v1/persons/p_{'a' * 26}/faces/{tid}").status_code == 404
        assert api.delete(f"/v1/persons/{barack}/faces/{tid}").status_code == 404  # not theirs

        receipt = api.delete(url)
        assert receipt.status_code == 200, receipt.text
        body = receipt.json()
        assert (body["person_id"], body["template_id"]) == (pid, tid)
        assert body["wal_checkpointed"] is True
        assert api.delete(url).status_code == 404
        assert api.get(f"/v1/persons/{pid}").json()["templates"] == []
        # Gone from the live matcher at once: the same face is only Barack's again.
        (face,) = api.post("/v1/identify", files=[photo("obama3.jpg")]).json()["faces"]
        assert face["person_id"] == barack

        entries = api.get("/v1/audit", params={"target_id": pid}).json()["entries"]
        assert [e["action"] for e in entries] == ["person_added", "template_added",
                                                  "template_removed"]
        assert {e["actor"] for e in entries} == {"api:test-admin"}
        assert entries[-1]["seq"] == body["audit_seq"]
        assert entries[-1]["hash"] == body["audit_hash"]
        assert api.delete(f"/v1/persons/{pid}").status_code == 200
