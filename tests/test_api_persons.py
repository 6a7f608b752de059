"""The admin API's persons, consent, audit and config routes, over TCP to a real daemon."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from api_daemon import (
    ApiDaemon,
    cli_json,
    consent,
    make_daemon,
    new_person,
)


def test_health_needs_no_token_and_v1_does(station: ApiDaemon) -> None:
    with station.client() as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        ready = anon.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "reasons": [],
                                "checks": {"models": "ok", "camera": "none", "broker": "ok"}}
        for path in ("/v1/persons", "/v1/audit", "/v1/config", "/metrics"):
            r = anon.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
    with station.client("eft_not-a-token-of-this-device-at-all-0000") as wrong:
        assert wrong.get("/v1/persons").status_code == 401
        assert wrong.get("/v1/persons").json() == {"detail": "unknown token"}


def test_person_lifecycle_and_receipt(station: ApiDaemon) -> None:
    with station.admin() as api:
        r = api.post("/v1/persons", json={"label": "Ada", "consent": consent(
            expires_at="2099-01-01T00:00:00Z", evidence="form 7")})
        assert r.status_code == 201, r.text
        person = r.json()
        assert person["label"] == "Ada" and person["consent"] == "active"
        assert person["consents"][0]["expires_at"] == "2099-01-01T00:00:00.000000Z"
        pid = person["id"]
        assert api.get(f"/v1/persons/{pid}").json() == person
        patched = api.patch(f"/v1/persons/{pid}", json={"label": "Ada King"})
        assert patched.status_code == 200 and patched.json()["label"] == "Ada King"
        assert api.patch(f"/v1/persons/{pid}", json={"label": None}).json()["label"] is None
        export = api.get(f"/v1/persons/{pid}/export").json()
        assert export["person"]["id"] == pid and export["templates"]["count"] == 0
        assert [e["action"] for e in export["audit"]][:3] == [
            "person_added", "label_changed", "label_changed"]
        receipt = api.delete(f"/v1/persons/{pid}")
        assert receipt.status_code == 200
        body = receipt.json()
        assert body["person_id"] == pid and body["removed"] == {
            "templates": 0, "consents": 1, "label": False}
        assert body["wal_checkpointed"] is True
        assert api.get(f"/v1/persons/{pid}").status_code == 404
        assert api.delete(f"/v1/persons/{pid}").status_code == 404
        # Every change was made by the token's name, in the audit chain.
        entries = api.get("/v1/audit", params={"target_id": pid}).json()["entries"]
        assert {e["actor"] for e in entries} == {"api:test-admin"}
        assert entries[-1]["seq"] == body["audit_seq"] and entries[-1]["hash"] == \
            body["audit_hash"]
        assert api.get("/v1/audit/verify").json()["ok"] is True


def test_label_change_leaves_no_old_label_on_disk(station: ApiDaemon) -> None:
    with station.admin() as api:
        pid = new_person(api, "Zebedee Quartermaine")
        api.patch(f"/v1/persons/{pid}", json={"label": "ZQ"})
        data_dir = Path(station.env["EDGE_FACE_STORAGE__DATA_DIR"])
        for f in data_dir.iterdir():
            if f.is_file():
                assert b"Zebedee" not in f.read_bytes(), f


def test_consent_is_required_and_strict(station: ApiDaemon) -> None:
    with station.admin() as api:
        cases = [
            {"label": "No consent"},
            {"label": "x", "consent": {"given_by": "x"}},
            {"label": "x", "consent": consent(purpous="typo")},
            {"label": "x", "consent": consent(), "nickname": "unknown field"},
            {"label": "x", "consent": consent(given_by="")},
            {"label": "x" * 201, "consent": consent()},
            {"label": "x", "consent": consent(expires_at="not a time")},
        ]
        before = len(api.get("/v1/persons", params={"limit": 500}).json()["persons"])
        for body in cases:
            r = api.post("/v1/persons", json=body)
            assert r.status_code == 422, (body, r.text)
        past = api.post("/v1/persons", json={"label": "x", "consent": consent(
            expires_at="2001-01-01T00:00:00Z")})
        assert past.status_code == 422 and "not in the future" in past.json()["detail"]
        assert api.post("/v1/persons", content=b"{not json",
                        headers={"content-type": "application/json"}).status_code == 422
        after = len(api.get("/v1/persons", params={"limit": 500}).json()["persons"])
        assert after == before  # nothing half-created
        pid = new_person(api, "Strict")
        for patch in ({"label": "y", "nickname": "unknown field"}, {}, {"label": "y" * 201}):
            assert api.patch(f"/v1/persons/{pid}", json=patch).status_code == 422, patch
        assert api.get(f"/v1/persons/{pid}").json()["label"] == "Strict"


def test_read_token_reads_but_cannot_write(station: ApiDaemon) -> None:
    with station.admin() as api:
        pid = new_person(api)
    with station.client(station.token("dashboard", "read")) as ro:
        assert ro.get("/v1/persons").status_code == 200
        assert ro.get(f"/v1/persons/{pid}").status_code == 200
        assert ro.get("/v1/audit").status_code == 200
        assert ro.get("/metrics").status_code == 200
        refused = [
            ro.post("/v1/persons", json={"label": "x", "consent": consent()}),
            ro.patch(f"/v1/persons/{pid}", json={"label": "y"}),
            ro.delete(f"/v1/persons/{pid}"),
            ro.get(f"/v1/persons/{pid}/export"),
            ro.post(f"/v1/persons/{pid}/consents/withdraw"),
            ro.get("/v1/config"),
            ro.get("/v1/gallery/export"),
        ]
        for r in refused:
            assert r.status_code == 403, (r.request.url, r.text)
            assert "scope 'read'" in r.json()["detail"]
    with station.admin() as api:
        assert api.get(f"/v1/persons/{pid}").json()["consent"] == "active"


def test_pagination_is_bounded_and_complete(station: ApiDaemon) -> None:
    with station.admin() as api:
        made = {new_person(api, f"page {i}") for i in range(7)}
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = api.get("/v1/persons", params=params).json()
            assert len(page["persons"]) <= 3
            seen += [p["id"] for p in page["persons"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert made <= set(seen) and len(seen) == len(set(seen))
        for bad in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"cursor": "garbage!"}):
            assert api.get("/v1/persons", params=bad).status_code == 422, bad
        assert api.get("/v1/audit", params={"limit": 1001}).status_code == 422
        first = api.get("/v1/audit", params={"limit": 2}).json()
        second = api.get("/v1/audit", params={"limit": 2, "after": first["next_after"]}).json()
        assert second["entries"][0]["seq"] == first["entries"][-1]["seq"] + 1


def test_withdraw_and_renew_consent(station: ApiDaemon) -> None:
    with station.admin() as api:
        pid = new_person(api)
        out = api.post(f"/v1/persons/{pid}/consents/withdraw").json()
        assert out == {"person_id": pid, "consents_withdrawn": 1, "templates_removed": 0}
        assert api.get(f"/v1/persons/{pid}").json()["consent"] == "withdrawn"
        renewed = api.post(f"/v1/persons/{pid}/consents", json=consent(purpose="again"))
        assert renewed.status_code == 201 and renewed.json()["person_id"] == pid
        assert api.get(f"/v1/persons/{pid}").json()["consent"] == "active"
        assert api.post("/v1/persons/p_nobody/consents", json=consent()).status_code == 404
        assert api.post(f"/v1/persons/{pid}/consents",
                        json=consent(scope="everything")).status_code == 422  # strict body
        assert api.get(f"/v1/persons/{pid}/export").status_code == 200
        # Every change, and the subject-access export, is audited under the token's name.
        entries = api.get("/v1/audit", params={"target_id": pid}).json()["entries"]
        assert [e["action"] for e in entries] == [
            "person_added", "consent_withdrawn", "consent_granted", "person_exported"]
        assert {e["actor"] for e in entries} == {"api:test-admin"}


def test_config_is_redacted(tmp_path: Path, models_dir: Path) -> None:
    """A device with a broker password: /v1/config shows that one is set, never what it is."""
    password = "Hunter2-Broker-Secret"
    daemon = make_daemon(tmp_path, models_dir, None, EDGE_FACE_MQTT__USERNAME="door",
                         EDGE_FACE_MQTT__PASSWORD=password).start()
    try:
        with daemon.admin() as api:
            r = api.get("/v1/config")
    finally:
        daemon.stop()
    assert r.status_code == 200, r.text
    cfg = r.json()
    assert cfg["sections"]["api"]["enabled"] is True
    assert cfg["sections"]["device"]["id"] == "api-door"
    assert cfg["sections"]["mqtt"]["password"] == "***"
    assert cfg["sections"]["mqtt"]["username"] == "door"
    assert password not in r.text and password not in daemon.logs()


def test_cli_and_api_see_one_gallery(station: ApiDaemon) -> None:
    """The CLI on the device and the API are two shells over one service layer."""
    with station.admin() as api:
        pid = new_person(api, "Shared")
        listed = cli_json(station.env, "person", "show", pid)
        assert listed == api.get(f"/v1/persons/{pid}").json()
        cli_made = cli_json(station.env, "person", "add", "--label", "From CLI",
                            "--consent-by", "x", "--purpose", "door")["id"]
        assert api.get(f"/v1/persons/{cli_made}").json()["label"] == "From CLI"


def test_requests_are_logged_without_bodies(station: ApiDaemon) -> None:
    secret_label = "Label-That-Must-Not-Be-Logged"
    with station.admin() as api:
        pid = new_person(api, secret_label)
        api.get(f"/v1/persons/{pid}")
    lines = [r for r in station.records() if r.get("logger") == "edge.api.access"]
    assert lines, "no access log lines"
    mine = [r for r in lines if r.get("route") == "/v1/persons/{person_id}"]
    assert mine and mine[-1]["token_name"] == "test-admin" and mine[-1]["status"] == 200
    assert {"method", "route", "status", "duration_ms", "token_name"} <= set(mine[-1])
    assert secret_label not in station.logs()
    assert station.tokens["test-admin"] not in station.logs()


def test_gallery_db_is_the_daemons(station: ApiDaemon) -> None:
    """The API wrote through the daemon's own store: the file holds the rows."""
    with station.admin() as api:
        pid = new_person(api)
    db = Path(station.env["EDGE_FACE_STORAGE__DATA_DIR"]) / "gallery.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM persons WHERE id = ?", (pid,)).fetchone()[0]


@pytest.mark.parametrize("path", ["/openapi.json"])
def test_openapi_documents_every_route(station: ApiDaemon, path: str) -> None:
    with station.client() as anon:
        schema = anon.get(path).json()
    paths = set(schema["paths"])
    assert {"/healthz", "/readyz", "/metrics", "/v1/persons", "/v1/persons/{person_id}",
            "/v1/persons/{person_id}/export", "/v1/persons/{person_id}/faces",
            "/v1/persons/{person_id}/faces/{template_id}", "/v1/identify", "/v1/audit",
            "/v1/audit/verify", "/v1/gallery/import", "/v1/gallery/export",
            "/v1/config"} <= paths
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"

    def example_of(body: dict) -> object:
        ref = body.get("schema", {}).get("$ref")
        target = schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else body
        return target.get("examples") or body.get("examples") or body.get("example")

    # Every JSON body in and every JSON answer out shows an example of itself.
    missing = []
    for route, ops in schema["paths"].items():
        for method, op in ops.items():
            bodies = [("request", op.get("requestBody", {}).get("content", {}))]
            bodies += [(code, r.get("content", {})) for code, r in op["responses"].items()
                       if code.startswith("2")]
            for what, content in bodies:
                json_body = content.get("application/json")
                if json_body and json_body.get("schema") and not example_of(json_body):
                    missing.append(f"{method.upper()} {route} {what}")
    assert not missing, missing


def test_invalid_input_says_where_without_echoing_it(station: ApiDaemon) -> None:
    secret = "Ms Confidential " + "q" * 200  # too long a label: refused, and not repeated back
    with station.admin() as api:
        r = api.post("/v1/persons", json={"label": secret, "consent": consent(
            purpose=None)})
    assert r.status_code == 422 and "Confidential" not in r.text
    body = r.json()
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "consent", "purpose")}
    assert "consent purpose" in body["detail"] or "purpose" in body["detail"]


def test_the_list_says_when_each_consent_ends(station: ApiDaemon) -> None:
    with station.admin() as api:
        ends = new_person(api, "Ends")
        r = api.post("/v1/persons", json={"label": "Dated", "consent": consent(
            expires_at="2099-05-01T12:00:00Z")})
        dated = r.json()["id"]
        gone = new_person(api, "Gone")
        api.post(f"/v1/persons/{gone}/consents/withdraw")
        rows = {p["id"]: p for p in api.get("/v1/persons", params={"limit": 500}).json()["persons"]}
    assert rows[ends]["consent_expires_at"] is None and rows[ends]["consent"] == "active"
    assert rows[dated]["consent_expires_at"] == "2099-05-01T12:00:00.000000Z"
    assert rows[gone]["consent"] == "withdrawn" and rows[gone]["consent_expires_at"] is None
