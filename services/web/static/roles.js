// The Roles page's actions: define, edit and delete a custom role, each a /v1 call with the session
// cookie, the CSRF header and an Idempotency-Key, as on the other pages (static/app.js).
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const error = document.getElementById("roles-error");

  function idempotencyKey() {
    return "web-" + (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));
  }

  function show(text) {
    if (!error) return;
    error.textContent = text;
    error.hidden = !text;
    if (text) error.scrollIntoView({ block: "nearest" });
  }

  async function call(method, path, body) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf, "Idempotency-Key": idempotencyKey() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      return { ok: false, problem: { detail: "The network did not answer; try again." } };
    }
    let payload = null;
    try { payload = await response.json(); } catch (_) { payload = null; }
    if (response.ok) return { ok: true, result: payload };
    const problem = payload && typeof payload === "object" ? payload : {};
    problem.detail = problem.detail || ("The request failed (" + response.status + ").");
    return { ok: false, problem };
  }

  // A refused deletion says who still holds the role, so that they can be given another first.
  function explained(problem) {
    const details = problem.details || {};
    const members = details.members || [];
    const invitations = details.invitations || [];
    if (problem.code !== "conflict" || (members.length === 0 && invitations.length === 0)) return problem.detail;
    const held = [];
    if (members.length) held.push("members " + members.join(", "));
    if (invitations.length) held.push("pending invitations " + invitations.join(", "));
    return "This role is still held by " + held.join(" and ") + ". Give them another role first.";
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.role-form");
    if (!form) return;
    event.preventDefault();
    const permissions = Array.from(form.querySelectorAll("input[name=permissions]:checked")).map((box) => box.value);
    const name = form.elements.name.value.trim();
    if (!name) { show("Give the role a name."); form.elements.name.focus(); return; }
    const body = { name, description: form.elements.description.value.trim(), permissions };
    const org = "/v1/orgs/" + encodeURIComponent(form.dataset.org) + "/roles";
    let answer;
    if (form.dataset.role) {
      answer = await call("PATCH", org + "/" + encodeURIComponent(form.dataset.role), body);
    } else {
      body.role_key = form.elements.role_key.value.trim();
      if (!body.role_key) { show("Give the role a key, like billing-viewer."); form.elements.role_key.focus(); return; }
      answer = await call("POST", org, body);
    }
    if (!answer.ok) { show(answer.problem.detail); return; }
    window.location.reload();
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-role-action='delete']");
    if (!button) return;
    const d = button.dataset;
    if (!window.confirm("Delete the role " + d.name + "?")) return;
    button.disabled = true;
    const answer = await call("DELETE", "/v1/orgs/" + encodeURIComponent(d.org) + "/roles/" + encodeURIComponent(d.role));
    button.disabled = false;
    if (!answer.ok) { show(explained(answer.problem)); return; }
    window.location.reload();
  });
})();
