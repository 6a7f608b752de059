// The operator page: plain DOM over the public /v1 API, with the token in sessionStorage.
// Everything from the device is put into the page with textContent, never as HTML, so a label
// cannot become markup; the Content-Security-Policy forbids inline script on top of that.
"use strict";

(() => {
  const TOKEN_KEY = "edge-face-token";
  const PAGE = 25;            // persons per page (the list itself carries consent and expiry)
  const EVENTS_EVERY_MS = 2000;
  const HEALTH_EVERY_MS = 10000;
  const MAX_EVENTS_SHOWN = 100;

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let cursor = null;
  let eventsAfter = 0;
  let paused = false;
  let timers = [];
  let shownEnrollment = null;  // the person whose enrollment result is on the page

  class ApiError extends Error {
    constructor(status, detail, body) {
      super(detail);
      this.status = status;
      this.body = body;
    }
  }

  function detailOf(body, response) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {  // FastAPI's validation errors: [{loc, msg}, ...]
      return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    }
    return `${response.status} ${response.statusText}`.trim();
  }

  async function api(path, { method = "GET", json, form, auth = true } = {}) {
    const headers = {};
    let body;
    if (auth) headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form;  // the browser sets multipart/form-data with its boundary
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: "no-store",
                                     credentials: "omit" });
    } catch (err) {
      throw new ApiError(0, `the device did not answer (${err.message})`, null);
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : null;
    if (!response.ok && !(response.status === 503 && path === "/readyz")) {
      let detail = detailOf(data, response);
      const wait = response.headers.get("retry-after");
      if (wait) detail += ` (try again in ${wait} s)`;
      throw new ApiError(response.status, detail, data);
    }
    return data;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "text") node.textContent = value;
      else if (key === "on") Object.entries(value).forEach(([ev, fn]) => node.addEventListener(ev, fn));
      else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function say(text, kind = "ok") {
    const status = $("status");
    status.textContent = text;
    status.className = `status ${kind}`;
  }

  // A failed call: a 401 means the token is gone (revoked, rotated), so back to sign-in.
  function failed(what, err) {
    if (err.status === 401) {
      signOut(`The device refused the token: ${err.message}`);
      return;
    }
    say(`${what} failed: ${err.message}`, "error");
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  // ------------------------------------------------------------------ sign in and out

  async function signIn(candidate) {
    token = candidate;
    try {
      await api("/v1/persons?limit=1");
    } catch (err) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);  // a stored token that stopped working is dropped
      const why = err.status === 401 || err.status === 403
        ? `The device refused this token: ${err.message}` : `Cannot sign in: ${err.message}`;
      $("login-error").textContent = why;
      $("token").focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login-error").textContent = "";
    $("token").value = "";
    $("login").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("health-h").focus();
    start();
  }

  function stopTimers() {
    timers.forEach(clearInterval);
    timers = [];
  }

  // Whatever the last session showed (names, receipts, events) leaves the page with its token:
  // hidden is not gone, and the next person at this screen may hold a different token.
  function forgetShown() {
    for (const id of ["persons-body", "event-list", "health-list", "receipt"]) {
      $(id).replaceChildren();
    }
    clearEnrollment();
    $("receipt-section").hidden = true;
    $("status").textContent = "";
    $("enroll-form").reset();
    fillTargets();  // no one left to choose
    cursor = null;
    eventsAfter = 0;
  }

  function signOut(message = "") {
    stopTimers();
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    forgetShown();
    $("app").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message;
    $("token").focus();
  }

  function start() {
    stopTimers();
    refreshHealth();
    refreshPersons();
    pollEvents();
    timers.push(setInterval(refreshHealth, HEALTH_EVERY_MS));
    timers.push(setInterval(() => { if (!paused) pollEvents(); }, EVENTS_EVERY_MS));
  }

  // ------------------------------------------------------------------ health

  async function refreshHealth() {
    const list = $("health-list");
    const rows = [];
    try {
      const alive = await api("/healthz", { auth: false });
      rows.push(["Process", alive.status === "ok" ? "alive" : String(alive.status)]);
      const ready = await api("/readyz", { auth: false });
      rows.push(["Ready", ready.ready ? "yes" : `no: ${ready.reasons.join("; ")}`]);
      for (const [name, state] of Object.entries(ready.checks || {})) rows.push([name, state]);
    } catch (err) {
      rows.push(["Device", `not answering: ${err.message}`]);
    }
    list.replaceChildren(...rows.flatMap(([k, v]) => [
      el("dt", { text: k }),
      el("dd", { text: v, class: /^(ok|yes|alive|none)$/.test(v) ? "good" : "bad" }),
    ]));
  }

  // ------------------------------------------------------------------ persons

  // The end of the consent in force: the list says it (null while active = never).
  function expiryOf(summary) {
    if (summary.consent !== "active") return "—";
    return summary.consent_expires_at ? fmtTime(summary.consent_expires_at) : "never";
  }

  function personRow(summary) {
    const id = summary.id;
    const name = summary.label || id;
    return el("tr", { "data-person": id },
      el("td", { text: summary.label || "—" }),
      el("td", {}, el("code", { text: id })),
      el("td", { text: summary.consent, class: `consent-${summary.consent}` }),
      el("td", { text: expiryOf(summary) }),
      el("td", { text: String(summary.templates) }),
      el("td", { class: "actions" },
        el("button", { type: "button", text: "Withdraw consent",
                       "aria-label": `Withdraw consent of ${name}`,
                       disabled: summary.consent !== "active",
                       on: { click: () => withdraw(id, name) } }),
        el("button", { type: "button", text: "Delete", class: "danger",
                       "aria-label": `Delete ${name}`,
                       on: { click: () => erase(id, name) } })));
  }

  async function refreshPersons(more = false) {
    try {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (more && cursor) query.set("cursor", cursor);
      const session = token;
      const page = await api(`/v1/persons?${query}`);
      if (token !== session) return;  // signed out meanwhile: show nothing of the old session
      const rows = page.persons.map(personRow);
      const body = $("persons-body");
      if (more) body.append(...rows); else body.replaceChildren(...rows);
      cursor = page.next_cursor;
      $("persons-more").hidden = !cursor;
      $("persons-empty").hidden = body.children.length > 0;
      fillTargets();
    } catch (err) {
      failed("Listing persons", err);
    }
  }

  function fillTargets() {
    const select = $("enroll-target");
    const chosen = select.value;
    const options = [...$("persons-body").querySelectorAll("tr")].map((tr) => {
      const id = tr.dataset.person;
      const label = tr.cells[0].textContent;
      return el("option", { value: id, text: label === "—" ? id : `${label} (${id})` });
    });
    select.replaceChildren(select.options[0], ...options);
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
    toggleNewPerson();
  }

  function toggleNewPerson() {
    const fresh = $("enroll-target").value === "";
    $("new-person").disabled = !fresh;
    $("new-person").hidden = !fresh;
  }

  async function withdraw(id, name) {
    if (!window.confirm(`Withdraw every consent of ${name}? Their templates are removed at once.`)) return;
    try {
      const out = await api(`/v1/persons/${encodeURIComponent(id)}/consents/withdraw`,
                            { method: "POST" });
      say(`Consent of ${name} withdrawn: ${out.consents_withdrawn} consent(s), `
          + `${out.templates_removed} template(s) removed.`);
      refreshPersons();
    } catch (err) {
      failed("Withdrawing consent", err);
    }
  }

  async function erase(id, name) {
    if (!window.confirm(`Erase ${name}: templates, consent records and label? This cannot be undone.`)) return;
    try {
      const receipt = await api(`/v1/persons/${encodeURIComponent(id)}`, { method: "DELETE" });
      // Their enrollment result would go on naming someone the device no longer holds.
      if (shownEnrollment === id) clearEnrollment();
      showReceipt(receipt);
      say(`${name} erased; the receipt is below.`);
      refreshPersons();
    } catch (err) {
      failed("Deleting", err);
    }
  }

  function showReceipt(r) {
    const rows = [
      ["Person id", r.person_id],
      ["Deleted at", `${fmtTime(r.deleted_at)} (${r.deleted_at})`],
      ["Templates removed", String(r.removed.templates)],
      ["Consent records removed", String(r.removed.consents)],
      ["Label removed", r.removed.label ? "yes" : "no label was held"],
      ["Audit entry", `#${r.audit_seq}`],
      ["Audit hash", r.audit_hash],
      ["Database log folded in and truncated", r.wal_checkpointed ? "yes" : "no"],
    ];
    $("receipt").replaceChildren(...rows.flatMap(([k, v]) => [
      el("dt", { text: k }), el("dd", {}, el("code", { text: v }))]));
    $("receipt-section").hidden = false;
    $("receipt-h").focus();
  }

  // ------------------------------------------------------------------ enroll

  function clearEnrollment() {
    $("enroll-result").replaceChildren();
    shownEnrollment = null;
  }

  function showEnrollment(out, note) {
    const rows = (out.results || []).map((r) => el("tr", {},
      el("td", { text: r.path }),
      el("td", { text: r.accepted ? "accepted" : "refused", class: r.accepted ? "good" : "bad" }),
      el("td", { text: r.accepted ? `template ${r.template_id}` : r.reason }),
      el("td", { text: r.quality && r.quality.score !== undefined
        ? r.quality.score.toFixed(2) : "" })));
    const table = el("table", {},
      el("caption", { text: `Person ${out.person_id}: ${out.templates_added} template(s) added` }),
      el("thead", {}, el("tr", {}, ...["Photo", "Result", "Template or reason", "Quality"]
        .map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows));
    const parts = [table];
    for (const w of out.warnings || []) parts.push(el("p", { class: "warn", text: `Warning: ${w}` }));
    if (note) parts.push(el("p", { class: "warn", text: note }));
    $("enroll-result").replaceChildren(...parts);
    shownEnrollment = out.person_id;
  }

  async function enroll(event) {
    event.preventDefault();
    const files = $("photos").files;
    if (!files.length) return;
    const button = $("enroll-submit");
    button.disabled = true;
    let id = $("enroll-target").value;
    let created = false;
    try {
      if (!id) {
        const expires = $("expires").value;
        const person = await api("/v1/persons", { method: "POST", json: {
          label: $("label").value.trim() || null,
          consent: {
            given_by: $("given-by").value.trim(),
            purpose: $("purpose").value.trim(),
            expires_at: expires ? new Date(expires).toISOString() : null,
            evidence: $("evidence").value.trim() || null,
          } } });
        id = person.id;
        created = true;
      }
      const form = new FormData();
      for (const file of files) form.append("image", file, file.name);
      let out;
      try {
        out = await api(`/v1/persons/${encodeURIComponent(id)}/faces`, { method: "POST", form });
      } catch (err) {
        if (err.status !== 422 || !err.body || !err.body.results) throw err;
        out = err.body;  // no photo was usable: the per-photo reasons are the answer
      }
      const note = out.templates_added ? "" : (created
        ? `Person ${id} was created with their consent but has no template yet: enroll another `
          + "photo for them (choose them under Person) or delete them." : "");
      showEnrollment(out, note);
      say(out.templates_added ? `Enrolled ${out.templates_added} photo(s) for ${id}.`
        : `No photo was usable for ${id}.`, out.templates_added ? "ok" : "error");
      $("enroll-form").reset();
      await refreshPersons();
    } catch (err) {
      if (created) await refreshPersons();
      shownEnrollment = created ? id : null;
      $("enroll-result").replaceChildren(el("p", { class: "error", text:
        `Enrollment failed: ${err.message}` + (created ? ` (person ${id} was created)` : "") }));
      failed("Enrollment", err);
    } finally {
      button.disabled = false;
      toggleNewPerson();
    }
  }

  // ------------------------------------------------------------------ events

  function eventItem(e) {
    let what;
    if (e.type === "recognized") what = `recognized ${e.person_id}`;
    else if (e.type === "unknown") what = "unknown face";
    else what = `camera ${e.camera_id} ${e.state}`;
    const extra = e.similarity !== null && e.similarity !== undefined
      ? ` (similarity ${e.similarity.toFixed(2)}, ${e.decision})` : "";
    return el("li", { class: `event-${e.type}`, "data-seq": String(e.seq) },
      el("time", { datetime: e.time, text: fmtTime(e.time) }), ` ${what}${extra}`);
  }

  async function pollEvents() {
    try {
      const session = token;
      const feed = await api(`/v1/events?after=${eventsAfter}`);
      if (token !== session) return;
      eventsAfter = feed.next_after;
      const list = $("event-list");
      for (const e of feed.events) list.prepend(eventItem(e));
      while (list.children.length > MAX_EVENTS_SHOWN) list.lastElementChild.remove();
      $("events-note").textContent = feed.truncated
        ? "Some events were skipped (more arrived than one poll shows)."
        : list.children.length === 0
          ? "No events yet: they appear here as the door sees people (person ids only)."
          : "Person ids only; the names stay in the gallery.";
    } catch (err) {
      if (err.status === 401) failed("Events", err);
      else $("events-note").textContent = `Event feed unavailable: ${err.message}`;
    }
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      signIn($("token").value.trim());
    });
    $("signout").addEventListener("click", () => signOut());
    $("health-refresh").addEventListener("click", refreshHealth);
    $("persons-refresh").addEventListener("click", () => refreshPersons());
    $("persons-more").addEventListener("click", () => refreshPersons(true));
    $("enroll-target").addEventListener("change", toggleNewPerson);
    $("enroll-form").addEventListener("submit", enroll);
    $("events-pause").addEventListener("click", () => {
      paused = !paused;
      $("events-pause").setAttribute("aria-pressed", String(paused));
      $("events-pause").textContent = paused ? "Resume feed" : "Pause feed";
    });
    if (token) signIn(token); else $("token").focus();
  });
})();
