// The streamrec live dashboard: follows GET v1/stream (server-sent events of the metrics topic) and
// draws it with uPlot. Everything the charts show is also on window.streamrecDashboard (series,
// totals, charts, trending, workers, status), which the browser test reads.
"use strict";

(function () {
  const KEEP_MS = 10 * 60 * 1000; // the recent past kept, as the server keeps it
  const TOP = 5; // tags and creators drawn: the top ones by views
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                  "#7f7f7f", "#bcbd22"];
  const STALE_S = 30; // a worker's last health record older than this is shown in red

  const dash = window.streamrecDashboard = {
    status: { state: "starting", detail: "connecting" },
    records: 0, // records received (history and live)
    renders: 0,
    series: { tag: {}, creator: {}, health: {}, dead_letters: { t: [], reasons: {} } },
    totals: { tag: {}, creator: {} },
    charts: {}, // chart name -> { labels, points, data } as drawn
    trending: [], // [[tag, [[item, views], ...]], ...] of the newest item window
    workers: [],
  };

  let windows, health, dirty = true;
  const charts = {};

  function reset() {
    windows = { tag: new Map(), creator: new Map(), item: new Map() }; // id -> Map(window start -> counts)
    health = new Map(); // worker -> records by window end
    dash.records = 0;
    dirty = true;
  }

  function apply(r) {
    dash.records += 1;
    if (r.type === "health") {
      const list = health.get(r.worker_id) || [];
      list.push(r);
      list.sort((a, b) => a.window_end_ms - b.window_end_ms);
      health.set(r.worker_id, list);
      return;
    }
    const byId = windows[r.type];
    if (!byId) return;
    let byStart = byId.get(r.id);
    if (!byStart) byId.set(r.id, byStart = new Map());
    let w = byStart.get(r.window_start_ms);
    if (!w) {
      w = { start: r.window_start_ms, end: r.window_end_ms, views: 0, likes: 0, shares: 0, tags: r.tags || [] };
      byStart.set(r.window_start_ms, w);
    }
    w.views += r.views || 0;
    w.likes += r.likes || 0;
    w.shares += r.shares || 0;
  }

  function prune() {
    let newest = 0;
    for (const byId of Object.values(windows)) for (const byStart of byId.values()) for (const w of byStart.values()) newest = Math.max(newest, w.end);
    const itemStarts = new Set();
    for (const byStart of windows.item.values()) for (const s of byStart.keys()) itemStarts.add(s);
    const keepItems = new Set([...itemStarts].sort((a, b) => b - a).slice(0, 2));
    for (const [kind, byId] of Object.entries(windows)) {
      for (const [id, byStart] of byId) {
        for (const [s, w] of byStart) if (w.end < newest - KEEP_MS || (kind === "item" && !keepItems.has(s))) byStart.delete(s);
        if (!byStart.size) byId.delete(id);
      }
    }
    for (const [worker, list] of health) {
      const last = list.length ? list[list.length - 1].window_end_ms : 0;
      health.set(worker, list.filter((r) => r.window_end_ms >= last - KEEP_MS));
    }
  }

  // --- series --------------------------------------------------------------------------------------

  function groupSeries(kind) {
    const series = {}, totals = {};
    for (const [id, byStart] of windows[kind]) {
      const ws = [...byStart.values()].sort((a, b) => a.start - b.start);
      const s = { t: [], views: [], likes: [], shares: [], like_rate: [], share_rate: [] };
      const total = { views: 0, likes: 0, shares: 0 };
      for (const w of ws) {
        s.t.push(w.start / 1000);
        for (const k of ["views", "likes", "shares"]) { s[k].push(w[k]); total[k] += w[k]; }
        s.like_rate.push(w.views ? w.likes / w.views : null);
        s.share_rate.push(w.views ? w.shares / w.views : null);
      }
      series[id] = s;
      totals[id] = total;
    }
    dash.series[kind] = series;
    dash.totals[kind] = totals;
  }

  const HEALTH_FIELDS = ["events_per_s", "consumer_lag", "freshness_p50_ms", "freshness_p99_ms", "online_checked",
                         "online_hit_at_10", "online_hit_at_50", "online_list_age_ms_p50"];

  function healthSeries() {
    const perWorker = {}, buckets = new Map();
    for (const [worker, list] of health) {
      const s = { t: [] };
      for (const f of HEALTH_FIELDS) s[f] = [];
      for (const r of list) {
        s.t.push(r.window_end_ms / 1000);
        for (const f of HEALTH_FIELDS) s[f].push(typeof r[f] === "number" ? r[f] : null);
        const at = Math.round(r.window_end_ms / 1000);
        const bucket = buckets.get(at) || {};
        for (const [reason, n] of Object.entries(r.dead_letter_reasons || {})) bucket[reason] = (bucket[reason] || 0) + n;
        buckets.set(at, bucket);
      }
      perWorker[worker] = s;
    }
    dash.series.health = perWorker;
    const t = [...buckets.keys()].sort((a, b) => a - b), reasons = {};
    for (const bucket of buckets.values()) for (const reason of Object.keys(bucket)) reasons[reason] = [];
    for (const at of t) for (const reason of Object.keys(reasons)) reasons[reason].push(buckets.get(at)[reason] || 0);
    dash.series.dead_letters = { t, reasons };
  }

  // --- charts --------------------------------------------------------------------------------------

  // Aligns [[xs, ys], ...] on the union of their xs (gaps are null) into uPlot's [xs, ys1, ys2, ...].
  function align(tables) {
    const xs = [...new Set(tables.flatMap((tb) => tb[0]))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    for (const [tx, ty] of tables) {
      const ys = new Array(xs.length).fill(null);
      tx.forEach((x, i) => { ys[index.get(x)] = ty[i]; });
      data.push(ys);
    }
    return data;
  }

  function draw(name, lines, format) {
    const figure = document.querySelector(`figure[data-chart="${name}"]`);
    const withData = lines.filter((l) => l.y.some((v) => v !== null));
    const labels = withData.map((l) => l.label);
    const data = align(withData.map((l) => [l.t, l.y]));
    const points = data.slice(1).reduce((n, ys) => n + ys.filter((v) => v !== null).length, 0);
    dash.charts[name] = { labels, points, data };
    let placeholder = figure.querySelector(".empty");
    let chart = charts[name];
    if (!points) {
      if (chart) { chart.destroy(); delete charts[name]; }
      if (!placeholder) {
        placeholder = document.createElement("p");
        placeholder.className = "empty";
        placeholder.textContent = "no data yet";
        figure.appendChild(placeholder);
      }
      return;
    }
    if (placeholder) placeholder.remove();
    if (chart && chart.labels.join("\u0000") !== labels.join("\u0000")) { chart.destroy(); chart = null; }
    if (!chart) {
      const axis = { size: 64, values: format ? (u, vals) => vals.map(format) : undefined };
      // rates: from 0, and a visible scale when every rate is 0
      const y = format === pct ? { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } : {};
      chart = new uPlot({
        width: Math.max(figure.clientWidth - 16, 300), height: 220,
        series: [{}].concat(labels.map((label, i) => ({
          label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
          value: format ? (u, v) => (v === null ? "-" : format(v)) : undefined,
        }))),
        axes: [{}, axis],
        // a single window: a minute around it rather than uPlot's years
        scales: { x: { time: true, range: (u, min, max) => (min === max ? [min - 30, max + 30] : [min, max]) }, y },
      }, data, figure);
      chart.labels = labels;
      charts[name] = chart;
    } else {
      chart.setData(data);
    }
  }

  const pct = (v) => (v === null ? "-" : `${(100 * v).toFixed(v < 0.1 ? 1 : 0)}%`);
  const num = (v) => (v === null || v === undefined ? "-" : Math.abs(v) >= 1000 ? v.toLocaleString("en") : `${+v.toFixed(1)}`);

  function metricOf(name) {
    return document.querySelector(`select[data-metric="${name}"]`).value;
  }

  function drawGroup(kind) {
    const top = Object.entries(dash.totals[kind]).sort((a, b) => b[1].views - a[1].views || (a[0] < b[0] ? -1 : 1))
      .slice(0, TOP).map(([id]) => id);
    const counts = metricOf(`${kind}_counts`), rates = metricOf(`${kind}_rates`);
    draw(`${kind}_counts`, top.map((id) => ({ label: id, t: dash.series[kind][id].t, y: dash.series[kind][id][counts] })));
    draw(`${kind}_rates`, top.map((id) => ({ label: id, t: dash.series[kind][id].t, y: dash.series[kind][id][rates] })), pct);
  }

  function drawHealth() {
    const workers = Object.keys(dash.series.health).sort();
    const per = (field, suffix) => workers.map((w) => ({
      label: workers.length > 1 || suffix ? `${w}${suffix || ""}` : w, t: dash.series.health[w].t, y: dash.series.health[w][field],
    }));
    draw("events_per_s", per("events_per_s"));
    draw("consumer_lag", per("consumer_lag"));
    draw("freshness", [...per("freshness_p50_ms", " p50"), ...per("freshness_p99_ms", " p99")]);
    const dl = dash.series.dead_letters;
    draw("dead_letters", Object.keys(dl.reasons).sort().map((reason) => ({ label: reason, t: dl.t, y: dl.reasons[reason] })));
    const checked = (w) => dash.series.health[w].online_checked.map((n, i) => (n ? i : -1)).filter((i) => i >= 0);
    const online = (field, suffix) => workers.map((w) => {
      const at = checked(w);
      return { label: `${w}${suffix}`, t: at.map((i) => dash.series.health[w].t[i]), y: at.map((i) => dash.series.health[w][field][i]) };
    });
    draw("online_hits", [...online("online_hit_at_10", " @10"), ...online("online_hit_at_50", " @50")], pct);
    draw("online_age", online("online_list_age_ms_p50", " p50"));
  }

  function drawTrending() {
    let newest = -1;
    for (const byStart of windows.item.values()) for (const s of byStart.keys()) newest = Math.max(newest, s);
    const byTag = new Map();
    for (const [id, byStart] of windows.item) {
      const w = byStart.get(newest);
      if (!w) continue;
      for (const tag of w.tags) {
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([id, w.views]);
      }
    }
    const ranked = [...byTag.entries()].map(([tag, items]) => [tag, items.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 5),
      items.reduce((n, it) => n + it[1], 0)]).sort((a, b) => b[2] - a[2]).slice(0, 8);
    dash.trending = ranked.map(([tag, items]) => [tag, items]);
    const box = document.getElementById("trending");
    box.replaceChildren();
    document.getElementById("trending-window").textContent = newest >= 0 ? `(window from ${new Date(newest).toLocaleTimeString()}, by views)` : "";
    if (!ranked.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "no data yet";
      box.appendChild(p);
      return;
    }
    for (const [tag, items] of ranked) {
      const card = document.createElement("div");
      const h = document.createElement("h3");
      h.textContent = tag;
      const ol = document.createElement("ol");
      for (const [item, views] of items) {
        const li = document.createElement("li");
        li.textContent = `${item} `;
        const span = document.createElement("span");
        span.textContent = `${views} views`;
        li.appendChild(span);
        ol.appendChild(li);
      }
      card.append(h, ol);
      box.appendChild(card);
    }
  }

  function drawWorkers() {
    const now = Date.now();
    dash.workers = [...health.entries()].sort().map(([worker, list]) => {
      const r = list[list.length - 1];
      return { worker, age_s: Math.max(0, (now - r.window_end_ms) / 1000), record: r };
    });
    const body = document.querySelector("#workers tbody");
    body.replaceChildren();
    if (!dash.workers.length) {
      const row = body.insertRow(), cell = row.insertCell();
      cell.colSpan = 8;
      cell.className = "empty";
      cell.textContent = "no data yet";
      return;
    }
    for (const { worker, age_s, record: r } of dash.workers) {
      const row = body.insertRow();
      const cells = [worker, `${age_s.toFixed(0)} s ago`, r.ready === undefined ? "-" : r.ready ? "yes" : "no",
                     num(r.events_per_s), num(r.events_total), num(r.consumer_lag), num(r.model_users), num(r.model_items)];
      cells.forEach((text, i) => {
        const cell = row.insertCell();
        cell.textContent = text;
        if (i === 1 && age_s > STALE_S) cell.className = "stale";
      });
    }
  }

  function render() {
    if (dirty) {
      dirty = false;
      prune();
      groupSeries("tag");
      groupSeries("creator");
      healthSeries();
      drawHealth();
      drawGroup("tag");
      drawGroup("creator");
      drawTrending();
      const tags = Object.values(dash.totals.tag).reduce((n, t) => n + t.views, 0);
      document.getElementById("summary").textContent = `${dash.records.toLocaleString("en")} records · ${tags.toLocaleString("en")} tag views in the last ${KEEP_MS / 60000} min`;
      dash.renders += 1;
    }
    drawWorkers(); // ages move on with the clock
  }

  // --- the stream ----------------------------------------------------------------------------------

  function setStatus(status) {
    dash.status = status;
    const el = document.getElementById("status");
    const text = {
      ok: "live",
      starting: "connecting to the metrics topic…",
      waiting: `waiting: ${status.detail}`,
      unreachable: "metrics topic unreachable, retrying",
      server: "dashboard server unreachable, retrying",
      denied: "this server needs a read key: open this page as /#key=<read key>",
    }[status.state] || status.state;
    el.textContent = text;
    el.title = status.detail || "";
    el.className = `status ${status.state === "server" ? "unreachable" : status.state}`;
  }

  function keyFromFragment() {
    const match = /(?:^|&)key=([^&]+)/.exec(window.location.hash.slice(1));
    if (!match) return;
    const secure = window.location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `streamrec_key=${decodeURIComponent(match[1])}; path=/; SameSite=Strict${secure}`;
    window.history.replaceState(null, "", window.location.pathname + window.location.search); // the key off the URL bar
  }

  function connect() {
    const source = new EventSource("v1/stream");
    source.addEventListener("history", (e) => {
      reset();
      for (const r of JSON.parse(e.data).records) apply(r);
    });
    source.addEventListener("records", (e) => {
      for (const r of JSON.parse(e.data).records) apply(r);
      dirty = true;
    });
    source.addEventListener("status", (e) => setStatus(JSON.parse(e.data)));
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) { setStatus({ state: "server", detail: "reconnecting" }); return; }
      source.close(); // refused (a key is needed) or the server is gone: ask why, then try again
      fetch("v1/stream/status", { credentials: "same-origin" })
        .then((answer) => setStatus(answer.status === 401 || answer.status === 403 ? { state: "denied", detail: `HTTP ${answer.status}` } : { state: "server", detail: `HTTP ${answer.status}` }))
        .catch(() => setStatus({ state: "server", detail: "no answer" }))
        .finally(() => setTimeout(connect, 3000));
    };
  }

  function start() {
    reset();
    keyFromFragment();
    for (const select of document.querySelectorAll("select[data-metric]")) select.addEventListener("change", () => { dirty = true; render(); });
    window.addEventListener("resize", () => {
      for (const [name, chart] of Object.entries(charts)) {
        const figure = document.querySelector(`figure[data-chart="${name}"]`);
        chart.setSize({ width: Math.max(figure.clientWidth - 16, 300), height: 220 });
      }
    });
    connect();
    render();
    setInterval(render, 1000);
  }

  start();
})();
