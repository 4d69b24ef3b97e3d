// The pages' actions: each one a /v1 call (same validation, same errors as any API client), sent with
// the session cookie, the CSRF header and, for commands, an Idempotency-Key. Money stays in integer
// cents; it is formatted here only for display.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function newKey() {
    return "web-" + (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));
  }

  async function call(method, path, body, idempotencyKey) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (failure) {
      return { ok: false, status: 0, problem: { code: "unavailable", detail: "The network did not answer; try again." } };
    }
    let payload = null;
    try { payload = await response.json(); } catch (_) { payload = null; }
    if (response.ok) return { ok: true, status: response.status, result: payload };
    const problem = payload && typeof payload === "object" ? payload : {};
    problem.detail = problem.detail || ("The request failed (" + response.status + ").");
    return { ok: false, status: response.status, problem };
  }

  function dollars(cents) {
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(cents);
    const whole = Math.floor(abs / 100).toLocaleString("en-US");
    const part = abs % 100;
    return sign + "$" + whole + (part === 0 ? "" : "." + String(part).padStart(2, "0"));
  }

  function shortDay(iso) {
    const moment = new Date(iso);
    return moment.getUTCDate() + " " + moment.toLocaleString("en-GB", { month: "short", timeZone: "UTC" });
  }

  function show(element, text) {
    if (!element) return;
    element.textContent = text;
    element.hidden = !text;
  }

  function announce(text) {
    const announcer = document.getElementById("announcer");
    if (announcer) announcer.textContent = text;
  }

  // ---- the Add Member dialog ------------------------------------------------------------
  const dialog = document.getElementById("add-member");
  if (dialog) {
    const form = document.getElementById("add-member-form");
    const review = document.getElementById("add-member-seats");
    const error = document.getElementById("add-member-error");
    const confirm = document.getElementById("add-member-confirm");
    const opener = document.getElementById("add-member-open");
    const org = dialog.dataset.org;
    const canBuy = dialog.dataset.canBuy === "true";
    // Minted each time the dialog opens, and again after any refusal: a corrected retry is a new command
    // (reusing a refused command's key for another body is `idempotency_conflict`).
    let idempotencyKey = null;
    let quote = null;
    let sending = false;

    function quoteFromPage() {
      return {
        seats_available: Number(dialog.dataset.seatsAvailable),
        next_seat_charge_cents: Number(dialog.dataset.nextCharge),
        unit_price_cents: Number(dialog.dataset.unitPrice),
        billing_period_end: dialog.dataset.periodEnd,
      };
    }

    function mustBuy() { return quote.seats_available < 1; }

    function renderQuote(changedPrice) {
      review.replaceChildren();
      const seats = document.createElement("p");
      seats.className = "seats-left";
      if (!mustBuy()) {
        seats.textContent = quote.seats_available === 1 ? "1 seat left: no charge." : quote.seats_available + " seats left: no charge.";
        review.append(seats);
        confirm.textContent = "Add member";
        confirm.disabled = false;
        return;
      }
      seats.textContent = "No seats left: adding a member buys one more seat.";
      review.append(seats);
      const price = document.createElement("p");
      price.className = "prorated";
      if (canBuy) {
        price.textContent = dollars(quote.next_seat_charge_cents) + " now for the rest of this period, ending " +
          shortDay(quote.billing_period_end) + "; then " + dollars(quote.unit_price_cents) + " a month.";
        review.append(price);
        if (changedPrice) {
          const changed = document.createElement("p");
          changed.className = "notice-changed";
          changed.textContent = "The price changed since this dialog opened. Review the new amount and confirm again.";
          review.append(changed);
        }
        confirm.textContent = "Buy a seat and add member";
        confirm.disabled = false;
      } else {
        price.textContent = "An owner must buy a seat before anyone else can be added.";
        review.append(price);
        confirm.disabled = true;
      }
    }

    async function refreshQuote() {
      const answer = await call("GET", "/v1/orgs/" + encodeURIComponent(org) + "/seats");
      quote = answer.ok && answer.result ? answer.result : quoteFromPage();
      renderQuote(false);
    }

    function focusables() {
      return Array.from(dialog.querySelectorAll("input, select, button, [tabindex]:not([tabindex='-1'])"))
        .filter((element) => !element.disabled && !element.hidden && element.offsetParent !== null);
    }

    async function open() {
      idempotencyKey = newKey();
      form.reset();
      show(error, "");
      quote = quoteFromPage();
      renderQuote(false);
      dialog.showModal();
      document.getElementById("invite-email").focus();
      await refreshQuote();
    }

    function close() {
      dialog.close();
      if (opener) opener.focus();
    }

    opener.addEventListener("click", open);
    document.getElementById("add-member-cancel").addEventListener("click", close);
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); close(); });
    // The focus trap: Tab and Shift+Tab cycle inside the dialog.
    dialog.addEventListener("keydown", (event) => {
      if (event.key !== "Tab") return;
      const items = focusables();
      if (items.length === 0) return;
      const first = items[0];
      const last = items[items.length - 1];
      if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
      else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (sending) return;  // a double click sends once; a retry would reuse the same key anyway
      const email = form.elements.email.value.trim();
      if (!email) { show(error, "Enter the email address of the person to invite."); form.elements.email.focus(); return; }
      const body = { email, role: form.elements.role.value };
      // A project scope: ids separated by commas or spaces; none given means every project.
      const projects = form.elements.projects.value.split(/[\s,]+/).filter((id) => id !== "");
      if (projects.length) body.projects = Array.from(new Set(projects));
      if (mustBuy()) body.accept_charge_cents = quote.next_seat_charge_cents;
      sending = true;
      confirm.disabled = true;
      show(error, "");
      const answer = await call("POST", "/v1/orgs/" + encodeURIComponent(org) + "/invitations", body, idempotencyKey);
      if (answer.ok) {
        // Still `sending` until the page is gone: an Enter pressed while it reloads sends nothing more.
        announce("Invitation sent to " + email);
        window.location.reload();
        return;
      }
      sending = false;
      confirm.disabled = false;
      const problem = answer.problem;
      // Refused: the next press sends a new command, whatever the user corrects. Unanswered (the network,
      // or a 5xx): the command may have landed, so a retry keeps the key and gets that command's answer.
      if (answer.status >= 400 && answer.status < 500) idempotencyKey = newKey();
      if ((problem.code === "charge_mismatch" || problem.code === "seat_purchase_required") && problem.details) {
        // The price (or the seats left) changed: show the fresh quote, and ask again.
        quote = Object.assign(quoteFromPage(), problem.details);
        renderQuote(true);
        show(error, problem.detail);
        confirm.focus();
        return;
      }
      show(error, problem.detail);
    });
  }

  // ---- row actions on the Team and API keys pages ----------------------------------------
  async function rowAction(button, method, path, body, confirmText, done) {
    if (confirmText && !window.confirm(confirmText)) return;
    button.disabled = true;
    const answer = await call(method, path, body, newKey());
    button.disabled = false;
    if (answer.ok) { announce(done); window.location.reload(); return; }
    show(document.getElementById("page-error") || document.getElementById("create-key-error"), answer.problem.detail);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const d = button.dataset;
    const org = "/v1/orgs/" + encodeURIComponent(d.org || "");
    if (d.action === "remove-member") {
      rowAction(button, "DELETE", org + "/members/" + encodeURIComponent(d.user), undefined,
        "Remove " + d.email + " from the organization? Their seat is freed at once.", "Removed " + d.email);
    } else if (d.action === "resend-invitation") {
      rowAction(button, "POST", org + "/invitations/" + encodeURIComponent(d.invitation) + "/resend", {}, null,
        "Invitation resent to " + d.email);
    } else if (d.action === "revoke-invitation") {
      rowAction(button, "DELETE", org + "/invitations/" + encodeURIComponent(d.invitation), undefined,
        "Revoke the invitation for " + d.email + "? Its link stops working.", "Invitation revoked");
    } else if (d.action === "change-role") {
      const select = document.getElementById(d.select);
      if (!select || select.value === select.dataset.current) return;
      const role = select.options[select.selectedIndex].text;
      rowAction(button, "PATCH", org + "/members/" + encodeURIComponent(d.user), { role: select.value }, null,
        d.email + " is now " + role);
    } else if (d.action === "revoke-key") {
      rowAction(button, "DELETE", org + "/api-keys/" + encodeURIComponent(d.key), undefined,
        "Revoke the key " + d.name + "? Anything using it stops working at once.", "Key revoked");
    }
  });

  // Choosing a role sends nothing (arrow keys on a closed select change its value at once): the row's
  // Change role button, enabled once the choice differs from the member's role, sends it.
  document.addEventListener("change", (event) => {
    const select = event.target.closest("select[data-action='choose-role']");
    if (!select) return;
    const apply = document.querySelector("button[data-action='change-role'][data-select='" + select.id + "']");
    if (apply) apply.disabled = select.value === select.dataset.current;
  });

  // ---- the invitation link's Accept ------------------------------------------------------
  const accept = document.getElementById("accept-invitation");
  if (accept) {
    accept.addEventListener("click", async () => {
      accept.disabled = true;
      const d = accept.dataset;
      const answer = await call("POST", "/v1/invitations/" + encodeURIComponent(d.invitation) + "/accept", { token: d.token }, newKey());
      if (answer.ok) {
        window.location.assign("/orgs/" + encodeURIComponent(d.org) + "/settings/team");
        return;
      }
      accept.disabled = false;
      const problem = answer.problem;
      const mismatch = problem.details && problem.details.reason === "email_mismatch";
      show(document.getElementById("accept-error"), mismatch
        ? "This invitation was sent to another email address than the one you are signed in with. Sign in as the invited person."
        : problem.detail);
    });
  }

  // ---- API keys: create, and the secret shown once ---------------------------------------
  const keyForm = document.getElementById("create-key-form");
  if (keyForm) {
    keyForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = document.getElementById("create-key-error");
      const name = keyForm.elements.name.value.trim();
      const permissions = Array.from(keyForm.querySelectorAll("input[name=permissions]:checked")).map((box) => box.value);
      if (!name) { show(error, "Give the key a name."); keyForm.elements.name.focus(); return; }
      if (permissions.length === 0) { show(error, "Choose at least one permission."); return; }
      const body = { name, permissions };
      const owner = keyForm.querySelector("input[name=owner]:checked");
      if (owner && owner.value === "me") body.owner_user_id = keyForm.dataset.me;
      // A project scope: ids separated by commas or spaces; none given means every project.
      const projects = keyForm.elements.projects.value.split(/[\s,]+/).filter((id) => id !== "");
      if (projects.length) body.projects = Array.from(new Set(projects));
      const expires = keyForm.elements.expires.value;
      if (expires) body.expires_at = expires + "T23:59:59Z";
      const answer = await call("POST", "/v1/orgs/" + encodeURIComponent(keyForm.dataset.org) + "/api-keys", body, newKey());
      if (!answer.ok) { show(error, answer.problem.detail); return; }
      show(error, "");
      const panel = document.getElementById("new-secret");
      document.getElementById("secret-value").value = answer.result.secret;
      panel.hidden = false;
      panel.focus();
      keyForm.reset();
      await refreshKeys();
    });
    // The list of keys, as the server renders it now, so the new key shows without a reload (the
    // secret, shown only in the panel above, is never part of the page).
    async function refreshKeys() {
      const current = document.querySelector("section[aria-labelledby='keys-heading']");
      let response;
      try { response = await fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } }); }
      catch (_) { return; }
      if (!response.ok || !current) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html")
        .querySelector("section[aria-labelledby='keys-heading']");
      if (fresh) current.replaceWith(document.importNode(fresh, true));
    }
    document.getElementById("copy-secret").addEventListener("click", async () => {
      const value = document.getElementById("secret-value");
      const status = document.getElementById("copy-status");
      try { await navigator.clipboard.writeText(value.value); status.textContent = "Copied."; }
      catch (_) { value.select(); status.textContent = "Selected: press Ctrl+C to copy."; }
    });
  }
})();
