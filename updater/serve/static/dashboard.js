// The dashboard's behaviour: live filters, confirmed actions sent without leaving the page,
// and the page kept current from /ui/state (every 2 s while visible). Everything also works
// without this script, through plain forms and links.
"use strict";
(function () {
  const table = document.getElementById("items");
  const item = document.getElementById("item");
  const marker = table || item;
  let version = table ? table.dataset.version : null;
  const notice = document.getElementById("notice");
  const status = document.getElementById("status");

  function say(text) {
    if (!notice) return;
    notice.textContent = text;
    notice.hidden = !text;
  }

  function filter() {
    if (!table) return;
    const state = document.getElementById("f-state").value;
    const node = document.getElementById("f-node").value;
    const text = document.getElementById("f-q").value.trim().toLowerCase();
    let shown = 0;
    const rows = table.tBodies[0].rows;
    for (const row of rows) {
      const match = (!state || row.dataset.state === state) && (!node || row.dataset.node === node) &&
        (!text || row.dataset.text.includes(text));
      row.hidden = !match;
      if (match) shown += 1;
    }
    document.getElementById("shown").textContent = shown + " of " + rows.length + " shown";
  }

  // The choices of a filter: every state (or node) the rows have now, and the one chosen.
  function choices(select, attribute) {
    const present = new Set();
    for (const row of table.tBodies[0].rows) if (row.dataset[attribute]) present.add(row.dataset[attribute]);
    if (select.value) present.add(select.value);
    const wanted = Array.from(present).sort();
    const have = Array.from(select.options).slice(1).map((o) => o.value);
    if (wanted.join("\n") === have.join("\n")) return;
    const chosen = select.value;
    select.length = 1;
    for (const value of wanted) select.add(new Option(value, value, false, value === chosen));
  }

  const filters = document.getElementById("filters");
  if (filters) {
    filters.addEventListener("input", filter);
    filters.addEventListener("change", filter);
    filters.addEventListener("submit", function (event) { event.preventDefault(); filter(); });
  }

  // An action link: asked for confirmation, then sent (with the session's CSRF token) here.
  document.addEventListener("click", async function (event) {
    const link = event.target.closest ? event.target.closest("a.act") : null;
    if (!link) return;
    event.preventDefault();
    const data = new URL(link.href).searchParams;
    const name = data.get("name");
    if (!window.confirm(link.textContent + (name ? " for " + name : "") + "?")) return;
    data.set("confirmed", "yes");
    data.set("csrf", document.querySelector("meta[name=csrf]").content);
    link.setAttribute("aria-disabled", "true");
    try {
      const answer = await fetch("/ui/act", {method: "POST", body: data,
        headers: {"Accept": "application/json"}, credentials: "same-origin"});
      const body = await answer.json();
      say(body.message || body.error || ("answer " + answer.status));
    } catch (error) {
      say("The updater did not answer: " + error);
    }
    link.removeAttribute("aria-disabled");
    refresh();
  });

  function when(seconds) {
    if (!seconds) return "-";
    const d = new Date(seconds * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  function showStatus(s) {
    if (!status) return;
    const last = s.last_pass;
    status.textContent = (s.running ? "A pass is running. " : "") + "Last pass: " +
      (last ? when(last.finished) + " (" + last.summary + ")" : "none yet") + ". Next pass: " +
      when(s.next_due) + "." + (s.last_error ? " Problem: " + s.last_error : "");
  }

  async function refresh() {
    if (!marker || document.hidden) return;
    let answer;
    try {
      const asked = item ? "item=" + encodeURIComponent(item.dataset.item) : "v=" + encodeURIComponent(version);
      answer = await fetch("/ui/state?" + asked, {credentials: "same-origin"});
    } catch (error) {
      return;
    }
    if (answer.status === 401) { window.location.assign("/login"); return; }
    if (!answer.ok) return;
    const body = await answer.json();
    showStatus(body.status);
    if (item) {
      if (body.item !== item.dataset.sign) window.location.reload();  // this item changed
      return;
    }
    if (body.rows === undefined) return;
    version = String(body.version);
    const tbody = table.tBodies[0];
    const keys = Object.keys(body.rows);
    const known = new Map();
    for (const row of tbody.rows) known.set(row.dataset.key, row);
    if (keys.length !== known.size || keys.some((k) => !known.has(k))) {
      window.location.reload();  // items came or went: the whole page, with its filters
      return;
    }
    const holder = document.createElement("tbody");
    for (const key of keys) {
      holder.innerHTML = body.rows[key];
      const fresh = holder.rows[0];
      const old = known.get(key);
      if (fresh && old.outerHTML !== fresh.outerHTML) old.replaceWith(fresh);
    }
    table.dataset.version = version;
    choices(document.getElementById("f-state"), "state");
    choices(document.getElementById("f-node"), "node");
    filter();
  }

  filter();
  setInterval(refresh, 2000);
})();
