"use strict";
// The HMI's pages: one document, four views, live values by server-sent events (/api/stream).
(function () {
  const $ = (id) => document.getElementById(id);
  let session = null;           // {user, role, csrf, default_expiry_s}
  let lastState = null;
  let planTimer = null;

  // ---- formatting -------------------------------------------------------------------------------------
  const DIR = {charging: "charging (into the EV battery)", discharging: "discharging (out of the EV battery)",
               idle: "idle (0 W)", unknown: "unknown"};
  function num(t) { return t && t.quality === "good" && typeof t.value === "number" ? t.value : null; }
  function watts(v) { return v === null ? "-" : (Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " kW" : v.toFixed(0) + " W"); }
  function pct(v) { return v === null ? "-" : (v * 100).toFixed(1) + " %"; }
  function qual(el, t) {
    el.classList.remove("q-bad", "q-stale", "q-missing");
    if (t && t.quality !== "good") { el.classList.add("q-" + t.quality); el.title = t.quality; } else el.title = "";
  }
  function setText(id, text, t) { const el = $(id); el.textContent = text; if (t !== undefined) qual(el, t); return el; }
  function show(t, fmt) {
    if (!t || t.quality === "missing") return "-";
    const v = t.value === null ? "-" : (fmt ? fmt(t.value) : String(t.value));
    return t.quality === "good" ? v : v + " (" + t.quality + ")";
  }
  function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }

  // ---- pages -------------------------------------------------------------------------------------------
  function page() { const p = (location.hash || "#overview").slice(1); return ["overview", "plan", "events", "tags"].includes(p) ? p : "overview"; }
  function showPage() {
    const p = page();
    for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + p;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === p);
    clearInterval(planTimer);
    if (p === "plan") { loadPlan(); planTimer = setInterval(loadPlan, 5000); }
    if (p === "events") loadEvents();
    if (p === "tags" && lastState) renderTags(lastState.tags);
  }
  window.addEventListener("hashchange", showPage);

  function renderOverview(o) {
    setText("mode", show(o.mode), o.mode);
    setText("mode-reason", show(o.mode_reason));
    const trip = o.trip && o.trip.value ? String(o.trip.value) : "";
    const tripEl = setText("trip", trip || "none", o.trip);
    tripEl.dataset.value = trip;
    setText("trip-reason", trip ? show(o.trip_reason) : "");
    setText("cessation", o.cessation && o.cessation.value ? "momentary cessation" : "");
    $("trip-banner").hidden = !trip;
    $("trip-banner").textContent = trip ? "TRIPPED: " + trip + (o.trip_reason.value ? " - " + o.trip_reason.value : "") : "";
    $("reset-trip").disabled = !trip;
    setText("grid-v", show(o.grid_voltage, (v) => v.toFixed(1) + " V"), o.grid_voltage);
    setText("grid-f", show(o.grid_frequency, (v) => v.toFixed(3) + " Hz"), o.grid_frequency);
    const p = num(o.power), sp = num(o.setpoint);
    setText("power", watts(p), o.power);
    const pd = setText("power-dir", DIR[o.power.direction] || o.power.direction);
    pd.className = "dir " + o.power.direction;
    setText("setpoint", watts(sp), o.setpoint).classList.toggle("forced", o.setpoint.forced);
    const sd = setText("setpoint-dir", DIR[o.setpoint.direction] || o.setpoint.direction);
    sd.className = "dir " + o.setpoint.direction;
    setText("enable", show(o.enable, (v) => v ? "given" : "withdrawn"), o.enable);
    const soc = num(o.soc), target = num(o.soc_target), reserve = num(o.reserve_soc);
    const socEl = setText("soc", pct(soc), o.soc);
    socEl.dataset.value = soc === null ? "" : String(soc);
    $("soc-fill").style.width = soc === null ? "0" : (soc * 100).toFixed(1) + "%";
    $("soc-target-mark").style.left = target === null ? "-10px" : (target * 100).toFixed(1) + "%";
    setText("soc-target", pct(target), o.soc_target);
    setText("soc-reserve", pct(reserve), o.reserve_soc);
    setText("ev-connected", o.ev_connected.value === true ? "EV plugged in" : o.ev_connected.value === false ? "no EV" : "");
    const lim = $("limits"); lim.textContent = "";
    for (const t of o.limits) { const tr = lim.insertRow(); cell(tr, t.name); qual(cell(tr, show(t, (v) => typeof v === "number" ? watts(v) : (v || "none"))), t); }
    const comms = $("comms"); comms.textContent = "";
    for (const c of o.comms) {
      const tr = comms.insertRow(); cell(tr, c.device);
      const td = cell(tr, c.not_good.length ? c.good + "/" + c.tags + " good: " + c.not_good.join(", ") : "all " + c.tags + " good");
      if (c.not_good.length) td.className = "q-bad";
    }
    const scan = $("scan"); scan.textContent = "";
    const ms = (v) => (v * 1000).toFixed(3) + " ms";
    for (const [label, t, f] of [["lateness", o.lateness, ms], ["cycle time", o.cycle_time, ms], ["overruns", o.overruns, String],
                                 ["task process", o.task_process_alive, (v) => v ? "alive" : "DOWN"],
                                 ["configuration", o.revision, (v) => String(v).slice(0, 12) || "-"], ["site time", {quality: "good", value: o.time}, (v) => v.replace("T", " ").slice(0, 19)]]) {
      const tr = scan.insertRow(); cell(tr, label); qual(cell(tr, show(t, f)), t);
    }
    const fb = $("forces-banner");
    fb.hidden = o.forces.length === 0;
    fb.textContent = o.forces.length ? "FORCED: " + o.forces.map((f) => f.tag + " = " + JSON.stringify(f.value)).join(", ") + " (see Live tags)" : "";
  }

  function renderTags(rows) {
    const filter = $("tag-filter").value.toLowerCase();
    const body = $("tag-table").tBodies[0];
    const frag = document.createDocumentFragment();
    const names = $("tag-names");
    if (names.options.length !== rows.length) {
      names.textContent = "";
      for (const r of rows) { const o = document.createElement("option"); o.value = r.name; names.appendChild(o); }
    }
    for (const r of rows) {
      if (filter && !r.name.toLowerCase().includes(filter)) continue;
      const tr = document.createElement("tr");
      tr.dataset.tag = r.name;
      if (r.forced) tr.className = "forced";
      cell(tr, r.name); cell(tr, r.value === null ? "-" : typeof r.value === "string" ? r.value : JSON.stringify(r.value));
      cell(tr, r.quality, "q-" + r.quality); cell(tr, r.age_s === null ? "-" : r.age_s.toFixed(1)); cell(tr, r.forced ? "FORCED" : "");
      frag.appendChild(tr);
    }
    body.textContent = "";
    body.appendChild(frag);
  }

  // ---- plan chart ----------------------------------------------------------------------------------------
  async function loadPlan() {
    const r = await api("GET", "/api/plan");
    if (!r) return;
    const p = r;
    const iv = p.intervals.map((i) => ({s: Date.parse(i.start), e: Date.parse(i.end), price: i.price, w: i.power_w, soc: i.soc_end}));
    const hist = p.history.map((h) => ({t: Date.parse(h.t), w: h.power_w, soc: h.soc}));
    const now = Date.parse(p.now);
    const m = /([+-])(\d\d):(\d\d)$/.exec(p.now), offsetMin = m ? (m[1] === "-" ? -1 : 1) * (60 * +m[2] + +m[3]) : 0;
    const times = [now, ...iv.map((i) => i.s), ...iv.map((i) => i.e), ...hist.map((h) => h.t)].filter(isFinite);
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const stepPts = (key) => { const pts = []; for (const i of iv) { pts.push([i.s, i[key]]); pts.push([i.e, i[key]]); } return pts; };
    $("plan-status").textContent = "plan: " + p.status + (p.reason ? " (" + p.reason + ")" : "") + "; " + iv.length + " intervals, " + hist.length + " samples measured";
    Chart.draw($("chart-power"), {
      t0, t1, now, offsetMin, leftLabel: "W (+ charge, - discharge)", rightLabel: "price",
      fmtLeft: (v) => v.toFixed(0), fmtRight: (v) => v.toFixed(1),
      series: [
        {points: stepPts("price"), color: "#9ca3af", axis: "right", width: 1.5},
        {points: stepPts("w").filter((q) => q[1] !== undefined), color: "#2563eb"},
        {points: hist.map((h) => [h.t, h.w]), color: "#f97316"},
      ],
      hlines: [{y: 0, color: "#111827", axis: "left"}],
    });
    const socPlan = []; if (p.soc_start !== null && iv.length && iv[0].soc !== undefined) socPlan.push([iv[0].s, p.soc_start]);
    for (const i of iv) if (i.soc !== undefined) socPlan.push([i.e, i.soc]);
    Chart.draw($("chart-soc"), {
      t0, t1, now, offsetMin, left: [0, 1], leftLabel: "SoC", fmtLeft: (v) => (v * 100).toFixed(0) + "%",
      series: [{points: socPlan, color: "#2563eb"}, {points: hist.map((h) => [h.t, h.soc]), color: "#f97316"}],
      hlines: p.reserve_soc !== null ? [{y: p.reserve_soc, color: "#dc2626"}] : [],
    });
  }

  // ---- event log -----------------------------------------------------------------------------------------
  function evMatches(e) {
    const k = $("ev-kind").value, s = $("ev-source").value, q = $("ev-text").value.toLowerCase();
    return (!k || e.kind === k) && (!s || e.source === s) && (!q || String(e.message || "").toLowerCase().includes(q));
  }
  function evRow(e) {
    const tr = document.createElement("tr");
    tr.className = "kind-" + e.kind;
    cell(tr, e.seq === undefined ? "" : String(e.seq)); cell(tr, e.k === undefined ? "" : String(e.k));
    cell(tr, e.time ? e.time.replace("T", " ").slice(0, 19) : ""); cell(tr, e.kind); cell(tr, e.source || ""); cell(tr, e.message || "");
    return tr;
  }
  function fillSelect(sel, values) {
    const cur = sel.value;
    const have = new Set(Array.from(sel.options).map((o) => o.value));
    for (const v of values) if (!have.has(v)) { const o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o); }
    sel.value = cur;
  }
  let evRequest = 0;  // only the answer to the latest filter is shown: an older one may arrive after it
  async function loadEvents() {
    const mine = ++evRequest;
    const q = new URLSearchParams({kind: $("ev-kind").value, source: $("ev-source").value, q: $("ev-text").value, limit: "500"});
    const r = await api("GET", "/api/events?" + q);
    if (!r || mine !== evRequest) return;
    fillSelect($("ev-kind"), r.kinds); fillSelect($("ev-source"), r.sources);
    const body = $("ev-table").tBodies[0]; body.textContent = "";
    for (const e of r.events) body.appendChild(evRow(e));
    $("ev-count").textContent = r.events.length + " shown, " + r.total + " received";
  }
  function onEvent(e) {
    fillSelect($("ev-kind"), [e.kind]); if (e.source) fillSelect($("ev-source"), [e.source]);
    if (page() !== "events" || !evMatches(e)) return;
    const body = $("ev-table").tBodies[0];
    body.insertBefore(evRow(e), body.firstChild);
    while (body.rows.length > 500) body.deleteRow(-1);
  }
  for (const id of ["ev-kind", "ev-source"]) $(id).addEventListener("change", loadEvents);
  $("ev-text").addEventListener("input", loadEvents);
  $("tag-filter").addEventListener("input", () => lastState && renderTags(lastState.tags));

  // ---- actions -----------------------------------------------------------------------------------------
  async function api(method, url, body) {
    const opts = {method, credentials: "same-origin", headers: {}};
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    if (method !== "GET" && session) opts.headers["X-CSRF-Token"] = session.csrf;
    const r = await fetch(url, opts);
    if (r.status === 401) { location.assign("/login"); return null; }
    if (body !== undefined || method !== "GET") return {status: r.status, json: await r.json().catch(() => null), text: r.ok ? "" : await r.clone().text().catch(() => "")};
    return r.ok ? r.json() : null;
  }
  function answer(text, ok) {
    const el = $("answer"); el.hidden = false; el.textContent = text; el.className = "answer " + (ok ? "accepted" : "refused");
    el.dataset.accepted = ok ? "true" : "false";
  }
  function confirmThen(text, body) {
    const dlg = $("confirm");
    $("confirm-text").textContent = text;
    dlg.returnValue = "";
    dlg.onclose = async () => {
      if (dlg.returnValue !== "ok") return;
      let r;
      try {
        const opts = {method: "POST", credentials: "same-origin",
                      headers: {"Content-Type": "application/json", "X-CSRF-Token": session ? session.csrf : ""}, body: JSON.stringify(body)};
        r = await fetch("/api/action", opts);
      } catch (e) { answer(text + ": no answer from the controller (" + e + ")", false); return; }
      let j = null, t = "";
      try { t = await r.text(); j = JSON.parse(t); } catch (e) { j = null; }
      if (r.status === 401) { location.assign("/login"); return; }
      if (j && typeof j.accepted === "boolean") answer((j.what || text) + ": " + (j.accepted ? "accepted by the scan" : "refused: " + j.reason), j.accepted);
      else answer(text + ": refused (" + r.status + "): " + t, false);
    };
    dlg.showModal();
  }
  $("reset-trip").addEventListener("click", () => confirmThen("Reset the latched trip? The safety layer resets it only once its cause is gone.", {action: "reset_trip"}));
  $("mode-remote-btn").addEventListener("click", () => {
    const w = Number($("mode-w").value), e = $("mode-expiry").value;
    const what = w > 0 ? "charge the EV battery at " + w + " W" : w < 0 ? "discharge the EV battery at " + (-w) + " W" : "hold 0 W";
    confirmThen("Request remote mode: " + what + " for " + (e || session.default_expiry_s) + " s?", {action: "mode", mode: "remote", setpoint_w: w, expiry_s: e === "" ? null : Number(e)});
  });
  $("mode-local-btn").addEventListener("click", () => confirmThen("Hand authority back to the local plan?", {action: "mode", mode: "local"}));
  $("force-btn").addEventListener("click", () => {
    const tag = $("force-tag").value, v = $("force-value").value;
    let value = v; try { value = JSON.parse(v); } catch (e) { value = v; }
    confirmThen("Force " + tag + " to " + JSON.stringify(value) + "? Programs and safety will see the forced value.", {action: "force", tag, value});
  });
  $("unforce-btn").addEventListener("click", () => confirmThen("Release the force on " + $("force-tag").value + "?", {action: "unforce", tag: $("force-tag").value}));
  $("logout-btn").addEventListener("click", async () => { await api("POST", "/api/logout"); location.assign("/login"); });

  // ---- start -------------------------------------------------------------------------------------------
  async function start() {
    const s = await api("GET", "/api/session");
    if (!s) return;
    session = s;
    $("who").textContent = s.user + " (" + s.role + ")";
    document.body.classList.add(s.role);
    $("mode-expiry").placeholder = String(s.default_expiry_s);
    showPage();
    const es = new EventSource("/api/stream");
    es.addEventListener("state", (m) => {
      lastState = JSON.parse(m.data);
      $("live").textContent = "live"; $("live").className = "pill ok";
      renderOverview(lastState.overview);
      if (page() === "tags") renderTags(lastState.tags);
    });
    es.addEventListener("event", (m) => onEvent(JSON.parse(m.data)));
    es.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "pill bad"; api("GET", "/api/session"); };
  }
  start();
})();
