// edgeline status page: the gateway header, the fleet table and a device's live plots.
// Three pages use this file (document.body.dataset.page): "fleet" (/), "device" (/device/<id>)
// and "snapshot" (one offline HTML file with its data embedded, gateway/web/snapshot.py).
// Text from the gateway is always set with textContent, never parsed as HTML.
(function () {
  "use strict";

  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];
  const SCORE = "#1f77b4";
  const THRESHOLD = "#d62728";
  const RAISED = "#d62728";
  const CLEARED = "#1a7f37";
  const MAX_POINTS = 600; // as many as the gateway keeps per series (gateway/live.py)
  const FLEET_MS = 2000;
  const DEVICE_MS = 1000;

  const edgeline = (window.edgeline = { plots: [] }); // the browser tests read the plots here

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    const s = Math.max(0, seconds);
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return (s / 60).toFixed(0) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "-";
    return Number(value).toLocaleString("en", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }

  function fact(label, value, cls, title) {
    return el("li", { title: title }, el("span", { class: "muted", text: label + " " }), el("b", { class: cls, text: value }));
  }

  async function getJSON(url) {
    const resp = await fetch(url, { cache: "no-store" });
    if (!resp.ok) throw new Error(url + ": HTTP " + resp.status);
    return resp.json();
  }

  function showError(text) {
    let box = document.getElementById("fetch-error");
    if (!text) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = el("div", { id: "fetch-error", class: "banner error", role: "alert" });
      document.body.prepend(box);
    }
    box.textContent = "Cannot reach the gateway (" + text + "); retrying.";
  }

  // ------------------------------------------------------------------ gateway header
  function Rates() {
    let prev = null;
    return function (st) {
      const f = st.frames || {};
      const now = { t: st.written_at, readings: f.readings || 0, frames: f.received || 0 };
      let out = null;
      if (prev && now.t > prev.t) {
        const dt = now.t - prev.t;
        out = { readings: (now.readings - prev.readings) / dt, frames: (now.frames - prev.frames) / dt };
      } else if (!prev && st.uptime_s > 0) {
        out = { readings: now.readings / st.uptime_s, frames: now.frames / st.uptime_s, average: true };
      }
      if (!prev || now.t > prev.t) prev = now;
      return out;
    };
  }

  function renderHeader(root, st, rates) {
    const ingest = st.ingest || {};
    const queue = ingest.queue || {};
    const bad = st.bad_frames || {};
    const fleet = st.fleet || {};
    const reasons = Object.entries(bad.by_reason || {}).map(([r, n]) => r + ": " + n).join(", ");
    const title = el("h1", {}, "edgeline gateway ", el("span", { text: st.gateway || "?" }),
      el("span", { class: "muted", text: "  site " + (st.site || "?") + ", up " + age(st.uptime_s) }));
    const facts = el("ul", { class: "facts" },
      fact("broker", ingest.connected ? "connected" : "disconnected", ingest.connected ? "ok" : "bad"),
      fact("devices online", num(fleet.online) + " / " + num(fleet.devices)),
      fact("ingest", rates ? num(rates.readings) + " readings/s, " + num(rates.frames, 1) + " frames/s" + (rates.average ? " (average)" : "") : "-"),
      fact("readings", num((st.frames || {}).readings)),
      fact("decode errors", num(bad.total), bad.total ? "warn" : "", reasons || undefined),
      fact("ingest queue", num(queue.depth) + " / " + num(queue.capacity) + ", dropped " + num(queue.dropped), queue.dropped ? "bad" : ""),
      fact("alerts", "raised " + num(st.alerts) + ", cleared " + num(st.alerts_cleared) + ", active " + num(st.alerts_active), st.alerts_active ? "bad" : ""),
    );
    const stale = st.now && st.written_at ? st.now - st.written_at : 0;
    if (stale > 10) facts.append(fact("status", age(stale) + " old", "bad"));
    root.replaceChildren(title, facts, renderForward(st.forward));
  }

  function renderForward(fwd) {
    if (!fwd) return el("p", { class: "muted", text: "Cloud link: none configured ([forward]); nothing is queued for the cloud." });
    const c = fwd.connection || {};
    const up = c.state === "connected";
    const since = c.since ? " for " + age(Date.now() / 1000 - c.since) : "";
    const link = el("p", { id: "cloud-link" }, el("span", { class: "muted", text: "Cloud link " }),
      el("b", { class: up ? "ok" : "bad", text: c.state || "?" }),
      el("span", { text: " " + (c.host || "") + ":" + (c.port || "") + (c.tls ? " (TLS)" : "") + since }),
      c.last_error && !up ? el("span", { class: "muted", text: "  last error: " + c.last_error }) : null);
    const table = el("table", { class: "lanes", id: "lanes" });
    table.append(el("tr", {}, ...["lane", "queued", "in flight", "oldest", "sent", "acknowledged", "dropped"].map((h, i) => el("th", { class: i ? "" : "text", text: h }))));
    for (const [lane, l] of Object.entries(fwd.lanes || {})) {
      table.append(el("tr", {},
        el("td", { class: "text", text: lane }),
        el("td", { text: num((l.depth || 0) + (l.buffered || 0)) }),
        el("td", { text: num(l.inflight) }),
        el("td", { text: l.oldest_age_s === null ? "-" : age(l.oldest_age_s) }),
        el("td", { text: num(l.sent) }),
        el("td", { text: num(l.acked) }),
        el("td", { class: l.dropped ? "bad" : "", text: num(l.dropped) })));
    }
    return el("div", {}, link, el("div", { class: "muted small", text: "Forward queue per lane (alerts drain first):" }), table);
  }

  // ------------------------------------------------------------------ signed updates
  // st.updates (gateway/updates/service.py, events.py), st.model_updates (models.py),
  // st.ota (rollout.py). Hidden when the gateway runs without [updates].
  const BAD_STATES = ["refused", "failed", "not_promoted", "rolled_back", "halted", "aborted"];
  const GOOD_STATES = ["promoted", "confirmed", "done", "installed"];
  const RECENT_ROWS = 12;

  function stateClass(state) {
    return BAD_STATES.includes(state) ? "bad" : GOOD_STATES.includes(state) ? "ok" : "";
  }

  function stateCell(state, label) {
    return el("td", { class: "text " + stateClass(state), "data-state": state, text: label || String(state).replace(/_/g, " ") });
  }

  function pct(x) {
    return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + " %";
  }

  function figuresText(f) {
    if (!f) return "";
    return num(f.windows) + " windows, alert rate " + pct(f.alert_rate) + " (" + num(f.alerts) + " alerts, the current model "
      + num(f.current_alerts) + "), agreement " + pct(f.agreement) + ", errors " + num(f.errors);
  }

  function shadowText(sh) {
    if (!sh) return "";
    return "in shadow: " + num(sh.windows) + " of " + num(sh.needed) + " windows so far, alert rate " + pct(sh.alert_rate)
      + ", agreement " + pct(sh.agreement) + ", errors " + num(sh.errors);
  }

  function bundleDetails(e, transfer, models) {
    const parts = [];
    if (transfer) parts.push("receiving over the cloud link: " + num(transfer.held) + " of " + num(transfer.chunks) + " chunks (" + num(transfer.size) + " B)");
    if (!e) return parts;
    if (e.device) parts.push("device " + e.device);
    if (e.kind === "model" && e.state === "shadow") {
      const sh = (models[e.name] || {}).shadow;
      parts.push(sh ? shadowText(sh) : "in shadow for " + num(e.windows) + " windows");
    }
    if (e.figures) parts.push("shadow verdict: " + figuresText(e.figures));
    if (e.replaced) parts.push("replaced " + e.replaced);
    if (e.reason) parts.push(e.reason);
    return parts;
  }

  function textTable(id, heads, rows, empty) {
    const table = el("table", { class: "updates", id: id });
    table.append(el("tr", {}, ...heads.map((h) => el("th", { class: "text", text: h }))));
    for (const row of rows) table.append(row);
    if (!rows.length) table.append(el("tr", {}, el("td", { class: "text muted", colspan: heads.length, text: empty })));
    return table;
  }

  function wrapCell(parts, cls) {
    return el("td", { class: "text wrap " + (cls || ""), text: parts.filter((p) => p).join("; ") || "-" });
  }

  function renderBundles(up, models, now) {
    const current = up.current || {};
    const transfers = up.transfers || {};
    const keys = [...new Set(Object.keys(current).concat(Object.keys(transfers)))].sort();
    const rows = keys.map((key) => {
      const e = current[key];
      const state = e ? e.state : "receiving";
      return el("tr", { "data-bundle": key },
        el("td", { class: "text", text: key }),
        stateCell(state),
        el("td", { class: "text", text: (e && e.version) || "-" }),
        el("td", { text: e ? age(now - e.at) + " ago" : "-" }),
        wrapCell(bundleDetails(e, transfers[key], models), e ? stateClass(e.state) : ""));
    });
    return textTable("update-bundles", ["bundle", "state", "version", "when", "details"], rows, "No bundle received yet.");
  }

  function lastVerdict(recent, pipeline) {
    for (let i = recent.length - 1; i >= 0; i--) {
      const e = recent[i];
      if (e.kind === "model" && e.name === pipeline && (e.state === "promoted" || e.state === "not_promoted")) return e;
    }
    return null;
  }

  function renderModels(models, recent) {
    const rows = Object.entries(models).sort().map(([name, m]) => {
      const v = lastVerdict(recent, name);
      const verdict = v ? [v.state.replace(/_/g, " ") + " " + (v.version || ""), v.figures ? figuresText(v.figures) : "", v.state === "promoted" ? "" : v.reason] : [];
      return el("tr", { "data-pipeline": name },
        el("td", { class: "text", text: name }),
        el("td", { class: "text", text: m.version + (m.counter ? " (update " + m.counter + ")" : " (from the configuration)") }),
        el("td", { class: "text", text: m.previous || "-" }),
        wrapCell(m.candidate ? [m.candidate + " " + shadowText(m.shadow)] : []),
        wrapCell(verdict, v ? stateClass(v.state) : ""));
    });
    return textTable("update-models", ["pipeline", "model", "rollback to", "candidate", "last verdict"], rows, "No pipeline.");
  }

  function deviceState(f) {
    if (f.state === "begin") return "transferring";
    if (f.state === "failed" && /^rolled_back/.test(f.reason || "")) return "rolled_back";
    return f.state;
  }

  const DEVICE_NOTES = {
    pending: "waits for its wave",
    switching: "every byte sent: the board switches to the new slot and restarts",
    trial: "runs the new firmware on trial: it confirms once its data is stored",
    confirmed: "runs the new firmware",
    current: "already ran this version",
  };

  function progressCell(f, state) {
    if (state !== "transferring" || !f.total) return el("td", { class: "text", text: "-" });
    const done = Math.min(1, (f.offset || 0) / f.total);
    return el("td", { class: "text" }, el("progress", { max: String(f.total), value: String(f.offset || 0) }),
      el("span", { text: " " + (100 * done).toFixed(0) + " % of " + num(f.total) + " B" }));
  }

  const ROLLOUT_CLASS = { running: "ok", done: "ok", paused: "warn", halted: "bad", aborted: "bad" };

  function rolloutStage(r) {
    const waves = r.waves || [];
    if (r.state === "done") return "every wave done";
    if (r.wave >= waves.length) return "";
    const canary = (r.canary || []).length > 0;
    if (canary && r.wave === 0) return "canary wave (" + r.canary.join(", ") + ")";
    return "wave " + (r.wave + 1 - (canary ? 1 : 0)) + " of " + (waves.length - (canary ? 1 : 0)) + (canary ? " after the canaries" : "");
  }

  function renderRollout(name, r) {
    const counts = Object.entries(r.counts || {}).map(([s, n]) => s + " " + n).join(", ");
    const head = el("p", { class: "rollout", "data-rollout": name },
      el("b", { text: name + " " + r.version + " " }),
      el("span", { class: ROLLOUT_CLASS[r.state] || "", "data-state": r.state, text: r.state }),
      el("span", { text: [rolloutStage(r), counts].filter((x) => x).map((x) => ", " + x).join("") }),
      r.reason ? el("span", { class: "rollout-reason " + (ROLLOUT_CLASS[r.state] || ""), text: ": " + r.reason }) : null);
    const rows = Object.entries(r.devices || {}).sort().map(([device, f]) => {
      const state = deviceState(f);
      const notes = [f.reason || DEVICE_NOTES[state], f.resends ? "resends " + f.resends : ""];
      return el("tr", { "data-ota-device": device },
        el("td", { class: "text", text: device }),
        stateCell(state),
        progressCell(f, state),
        wrapCell(notes, stateClass(state)));
    });
    return el("div", {}, head, textTable("", ["device", "state", "transfer", "details"], rows, "No device matches the rollout."));
  }

  function renderRecent(recent, now) {
    const rows = recent.slice(-RECENT_ROWS).reverse().map((e) => el("tr", {},
      el("td", { text: age(now - e.at) + " ago" }),
      el("td", { class: "text", text: e.kind + "/" + e.name }),
      stateCell(e.state),
      el("td", { class: "text", text: e.version || "-" }),
      wrapCell([e.device ? "device " + e.device : "", e.reason])));
    return textTable("update-recent", ["when", "bundle", "state", "version", "details"], rows, "Nothing yet.");
  }

  function renderUpdates(st) {
    const root = document.getElementById("updates");
    if (!root) return;
    const up = st.updates;
    root.closest("section").hidden = !up;
    if (!up) return;
    const now = st.now || st.written_at;
    const models = st.model_updates || {};
    const recent = up.recent || [];
    const rollouts = Object.entries((st.ota || {}).rollouts || {}).sort();
    root.replaceChildren(
      el("p", { class: "muted small", text: "Signed bundles (release keys " + (up.trusted_keys || []).join(", ") + "): received " + num(up.received)
        + ", refused " + num(up.refused) + " since the gateway started." }),
      renderBundles(up, models, now),
      el("h3", { text: "Models" }),
      renderModels(models, recent),
      el("h3", { text: "Firmware rollouts" }),
      rollouts.length ? el("div", { id: "update-rollouts" }, ...rollouts.map(([n, r]) => renderRollout(n, r)))
        : el("p", { class: "muted", text: "No firmware rollout." }),
      el("h3", { text: "Recent transitions" }),
      renderRecent(recent, now));
  }

  // ------------------------------------------------------------------ per-device calibration
  // st.pipelines[name].calibration (gateway/calibration.py): each device's phase, windows counted
  // of those needed, the threshold it learned beside the model's. Hidden when no pipeline calibrates.
  const PHASE_NOTES = {
    normalise: "learns its input normalisation (the model's applies meanwhile)",
    threshold: "learns its threshold (the model's applies meanwhile)",
    calibrated: "its own normalisation and threshold apply",
  };

  function when(t) {
    if (t === null || t === undefined) return "-";
    const d = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function renderCalibration(st) {
    const root = document.getElementById("calibration");
    if (!root) return;
    const pipes = Object.entries(st.pipelines || {}).filter(([, p]) => p && p.calibration).sort();
    root.closest("section").hidden = !pipes.length;
    if (!pipes.length) return;
    const rows = [];
    const notes = [];
    for (const [name, p] of pipes) {
      const c = p.calibration;
      notes.push(name + ": " + num(c.windows) + " windows a phase, target false-alarm rate " + c.false_alarm_rate
        + (c.normalise ? "" : ", threshold only") + ", model " + c.model_version
        + (c.devices_omitted ? " (" + num(c.devices_omitted) + " more devices not shown)" : ""));
      for (const [device, d] of Object.entries(c.devices || {}).sort()) {
        const done = d.phase === "calibrated";
        rows.push(el("tr", { "data-calibration": name + "/" + device },
          el("td", { class: "text", text: name }),
          el("td", { class: "text", text: device }),
          el("td", { class: "text " + (done ? "ok" : ""), "data-phase": d.phase, text: d.phase }),
          el("td", { text: done ? "done" : num(d.windows) + " of " + num(d.needed) }),
          el("td", { text: d.threshold === null ? "-" : num(d.threshold, 4) }),
          el("td", { text: num(d.model_threshold, 4) }),
          el("td", { class: "text", text: when(done ? d.calibrated_at : d.started) }),
          el("td", { class: "text wrap muted", text: PHASE_NOTES[d.phase] || "" })));
      }
    }
    root.replaceChildren(
      el("p", { class: "muted small", text: "Per-device calibration: " + notes.join("; ") + "." }),
      textTable("calibration-devices", ["pipeline", "device", "phase", "windows", "threshold", "model's", "since", ""], rows,
        "No device scored yet."));
  }

  // ------------------------------------------------------------------ fleet table
  function alertText(alerts, now) {
    const parts = [];
    let active = false;
    for (const [pipeline, r] of Object.entries(alerts || {})) {
      if (r.state === "cleared") {
        parts.push(pipeline + ": cleared " + age(now - (r.cleared_at || r.window_end)) + " ago");
      } else {
        active = true;
        parts.push(pipeline + ": ALERT for " + age(now - r.since) + " (score " + num(r.score, 3) + " > " + num(r.threshold, 3) + ")");
      }
    }
    return { text: parts.join("; ") || "-", active: active };
  }

  const COLUMNS = [
    { head: "device", text: true, key: (r) => r.device },
    { head: "state", text: true, key: (r) => (r.online ? 0 : 1) },
    { head: "last seen", key: (r, now) => now - r.last_seen },
    { head: "rate", key: (r) => r.rate_hz },
    { head: "readings", key: (r) => r.samples },
    { head: "gaps", key: (r) => r.gaps },
    { head: "queue", key: (r) => r.queue_depth ?? -1 },
    { head: "RSSI", key: (r) => r.rssi ?? -999 },
    { head: "firmware", text: true, key: (r) => r.fw_version || "" },
    { head: "alerts", text: true, key: (r, now) => (alertText(r.alerts, now).active ? 0 : 1) },
  ];

  function FleetTable(table, linkFor) {
    let sortBy = 0;
    let desc = false;
    let last = { rows: [], now: 0 };
    function cells(r, now) {
      const alerts = alertText(r.alerts, now);
      return [
        el("td", { class: "text" }, el("a", { href: linkFor(r.device), text: r.device })),
        el("td", { class: "text " + (r.online ? "ok" : "bad"), text: r.online ? "online" : "offline (" + (r.state_reason || "?") + ")" }),
        el("td", { text: r.last_seen ? age(now - r.last_seen) + " ago" : "never" }),
        el("td", { text: num(r.rate_hz, 1) + " Hz" }),
        el("td", { text: num(r.samples) }),
        el("td", { class: r.gaps ? "warn" : "", text: num(r.gaps) }),
        el("td", { text: num(r.queue_depth) }),
        el("td", { text: r.rssi === null || r.rssi === undefined ? "-" : r.rssi + " dBm" }),
        el("td", { class: "text", text: r.fw_version || "-" }),
        el("td", { class: "text " + (alerts.active ? "bad" : ""), text: alerts.text }),
      ];
    }
    function render() {
      const { rows, now } = last;
      const col = COLUMNS[sortBy];
      const sorted = rows.slice().sort((a, b) => {
        const ka = col.key(a, now);
        const kb = col.key(b, now);
        const c = ka < kb ? -1 : ka > kb ? 1 : a.device < b.device ? -1 : 1;
        return desc ? -c : c;
      });
      const head = el("tr", {}, ...COLUMNS.map((c, i) => {
        const th = el("th", { class: (c.text ? "text " : "") + (i === sortBy ? "sorted" + (desc ? " desc" : "") : ""), text: c.head });
        th.addEventListener("click", () => {
          desc = i === sortBy ? !desc : false;
          sortBy = i;
          render();
        });
        return th;
      }));
      const body = sorted.map((r) => el("tr", { "data-device": r.device }, ...cells(r, now)));
      if (!body.length) body.push(el("tr", {}, el("td", { class: "text muted", colspan: COLUMNS.length, text: "No device has been seen yet." })));
      table.replaceChildren(head, ...body);
    }
    return function update(rows, now) {
      last = { rows: rows, now: now };
      render();
    };
  }

  // ------------------------------------------------------------------ a device's plots
  function markersPlugin(markers) {
    return {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            const { left, top, width, height } = u.bbox;
            const px = window.devicePixelRatio || 1;
            ctx.save();
            ctx.lineWidth = 2 * px;
            ctx.font = 12 * px + "px sans-serif";
            for (const m of markers()) {
              const x = u.valToPos(m.t, "x", true);
              if (!isFinite(x) || x < left || x > left + width) continue;
              ctx.strokeStyle = m.colour;
              ctx.fillStyle = m.colour;
              ctx.setLineDash([5 * px, 3 * px]);
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              ctx.fillText(m.label, x + 4 * px, top + 14 * px);
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  function decades(u, splits) {
    return splits.map((v) => (Number.isInteger(Math.round(Math.log10(v) * 1e6) / 1e6) ? v : null));
  }

  function appendNewer(times, columns, t, values) {
    // points of t (with values[k][i]) newer than the last time held; keeps MAX_POINTS
    const lastT = times.length ? times[times.length - 1] : -Infinity;
    for (let i = 0; i < t.length; i++) {
      if (t[i] <= lastT) continue;
      times.push(t[i]);
      for (let k = 0; k < columns.length; k++) columns[k].push(values[k][i]);
    }
    const extra = times.length - MAX_POINTS;
    if (extra > 0) {
      times.splice(0, extra);
      for (const col of columns) col.splice(0, extra);
    }
  }

  function DeviceView(root, device) {
    const plots = el("div", { class: "plots" });
    const head = el("div", {});
    root.replaceChildren(head, plots);
    const readings = { t: [], cols: [], charts: [] };
    const scores = {}; // pipeline -> {t, s, thr, chart}
    const episodes = {}; // alert_id -> {pipeline, since, cleared_at}
    const missing = typeof window.uPlot === "undefined";
    if (missing) {
      plots.append(el("p", { class: "bad", id: "plots-missing",
        text: "The live plots need uPlot, which is missing from this installation (see the message at the top)." }));
    }

    function width(box) {
      return Math.max(280, Math.floor(box.clientWidth || 460));
    }

    function chart(title, series, data, opts, meta) {
      const box = el("div", { class: "plot", "data-plot": title });
      box.append(el("div", { class: "plot-title", text: title }));
      plots.append(box);
      const u = new window.uPlot(Object.assign({
        width: width(box), height: 170, series: series,
        scales: { x: { time: true } }, legend: { show: false },
        cursor: { drag: { x: false, y: false } },
      }, opts || {}), data, box);
      edgeline.plots.push(Object.assign({ device: device, title: title, kind: "readings", u: u }, meta || {}));
      window.addEventListener("resize", () => u.setSize({ width: width(box), height: 170 }));
      return u;
    }

    function markers(pipeline) {
      return () => {
        const out = [];
        for (const e of Object.values(episodes)) {
          if (e.pipeline !== pipeline) continue;
          out.push({ t: e.since, colour: RAISED, label: "raised" });
          if (e.cleared_at) out.push({ t: e.cleared_at, colour: CLEARED, label: "cleared" });
        }
        return out;
      };
    }

    function facts(d, now) {
      const h = d.health || {};
      const alerts = alertText(d.alerts, now);
      head.replaceChildren(
        el("h2", {}, el("span", { text: d.device + " " }), el("span", { class: d.online ? "ok" : "bad", text: d.online ? "online" : "offline (" + (d.state_reason || "?") + ")" })),
        el("ul", { class: "facts" },
          fact("last seen", d.last_seen ? age(now - d.last_seen) + " ago" : "never"),
          fact("firmware", d.fw_version || "-"),
          fact("boot", d.boot === null || d.boot === undefined ? "-" : String(d.boot)),
          fact("rate", num(d.rate_hz, 1) + " Hz"),
          fact("readings", num(d.samples)),
          fact("gaps", num(d.gaps)),
          fact("queue", num(h.queue_depth)),
          fact("RSSI", h.rssi === undefined ? "-" : h.rssi + " dBm"),
          fact("free heap", h.free_heap === undefined ? "-" : num(h.free_heap) + " B"),
          fact("alerts", alerts.text, alerts.active ? "bad" : "")));
    }

    return function update(d, now) {
      facts(d, now);
      for (const r of (d.episodes || []).concat(Object.values(d.alerts || {}))) {
        episodes[r.alert_id || r.pipeline + r.since] = { pipeline: r.pipeline, since: r.since, cleared_at: r.cleared_at };
      }
      if (missing) return;
      const hist = d.history || {};
      const units = {};
      for (const c of d.channels || []) units[c.name] = c.unit;
      if (!readings.charts.length && (hist.channels || []).length) {
        readings.cols = hist.channels.map(() => []);
        readings.charts = hist.channels.map((name, i) => chart(name + (units[name] ? " (" + units[name] + ")" : ""),
          [{}, { label: name, stroke: COLOURS[i % COLOURS.length], width: 1.5, points: { show: false } }], [[], []]));
      }
      if (readings.charts.length && (hist.t || []).length) {
        appendNewer(readings.t, readings.cols, hist.t, hist.values);
        readings.charts.forEach((u, i) => u.setData([readings.t, readings.cols[i]]));
      }
      for (const [pipeline, h] of Object.entries(hist.scores || {})) {
        let p = scores[pipeline];
        if (!p) {
          p = scores[pipeline] = { t: [], s: [], thr: [] };
          p.chart = chart("anomaly score: " + pipeline, [{},
            { label: "score", stroke: SCORE, width: 1.5 },
            { label: "threshold", stroke: THRESHOLD, width: 1.5, dash: [6, 4], points: { show: false } }],
          [[], [], []], { scales: { x: { time: true }, y: { distr: 3 } }, legend: { show: true, live: true },
            // a log scale: grid lines and labels at the decades only
            axes: [{}, { filter: decades, grid: { filter: decades }, ticks: { filter: decades } }], plugins: [markersPlugin(markers(pipeline))] },
          { kind: "score", pipeline: pipeline, markers: markers(pipeline) });
        }
        const threshold = (hist.thresholds || {})[pipeline];
        const positive = h.score.map((s) => (s > 0 ? s : null)); // a log scale
        appendNewer(p.t, [p.s, p.thr], h.t, [positive, h.t.map(() => threshold)]);
        p.chart.setData([p.t, p.s, p.thr]);
      }
    };
  }

  // ------------------------------------------------------------------ pages
  function latest(update) {
    // the newest point time of a device's series: the next request asks only for newer ones
    let since = null;
    return {
      since: () => since,
      take: (d) => {
        const h = d.history || {};
        const ends = [];
        if (h.t && h.t.length) ends.push(h.t[h.t.length - 1]);
        for (const s of Object.values(h.scores || {})) if (s.t.length) ends.push(s.t[s.t.length - 1]);
        // the slowest series decides, so no series misses a point (duplicates are skipped)
        if (ends.length) since = Math.min(...ends);
        update(d, d.now);
      },
    };
  }

  function poll(fn, ms) {
    const run = async () => {
      try {
        await fn();
        showError(null);
      } catch (err) {
        showError(err.message);
      }
      setTimeout(run, ms);
    };
    run();
  }

  function headerPoller() {
    const header = document.getElementById("gateway");
    const rates = Rates();
    return async () => {
      const st = await getJSON("/api/status");
      renderHeader(header, st, rates(st));
      renderUpdates(st);
      renderCalibration(st);
    };
  }

  function fleetPage() {
    const update = FleetTable(document.getElementById("fleet"), (d) => "/device/" + encodeURIComponent(d));
    const header = headerPoller();
    poll(async () => {
      const fleet = await getJSON("/api/fleet");
      update(fleet.devices, fleet.now);
      await header();
    }, FLEET_MS);
  }

  function devicePage() {
    const device = decodeURIComponent(location.pathname.split("/").pop());
    document.title = device + " - edgeline";
    const view = latest(DeviceView(document.getElementById("device"), device));
    poll(async () => {
      const since = view.since();
      view.take(await getJSON("/api/device/" + encodeURIComponent(device) + (since === null ? "" : "?since=" + since)));
    }, DEVICE_MS);
    poll(headerPoller(), FLEET_MS);
  }

  function snapshotPage() {
    const data = JSON.parse(document.getElementById("snapshot-data").textContent);
    const now = data.status.now || data.status.written_at;
    renderHeader(document.getElementById("gateway"), data.status, Rates()(data.status));
    renderUpdates(data.status);
    renderCalibration(data.status);
    FleetTable(document.getElementById("fleet"), (d) => "#device-" + d)(data.fleet.devices, data.fleet.now);
    const root = document.getElementById("devices");
    for (const d of Object.values(data.devices)) {
      const section = el("section", { class: "snapshot-device", id: "device-" + d.device });
      root.append(section);
      DeviceView(section, d.device)(d, now);
    }
  }

  const page = document.body.dataset.page;
  if (page === "fleet") fleetPage();
  else if (page === "device") devicePage();
  else if (page === "snapshot") snapshotPage();
})();
