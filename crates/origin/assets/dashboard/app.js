// tidegate dashboard: polls the read-only API once a second, keeps a short bitrate and packet
// history per stream in the page, and plays a preview with hls.js in the detail view.
// No framework, no build step; every text from the API goes through textContent.
"use strict";

(function () {
  const POLL_MS = 1000;
  const DETAIL_POLL_MS = 2000;
  /** Samples kept per stream (one per poll): a little over two minutes. */
  const HISTORY_SAMPLES = 150;
  /** Samples the overview sparklines show (one minute). */
  const SPARK_SAMPLES = 60;
  /** Window of the drop rate shown, ms (the health rules use 10 s by default too). */
  const DROP_WINDOW_MS = 10000;
  const TOKEN_KEY = "tidegate-admin-token";
  /** Life of the playback token the preview mints for a signed tenant's stream, seconds. */
  const PREVIEW_TOKEN_TTL_S = 600;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  const state = {
    streams: new Map(), // key -> last JSON object
    samples: new Map(), // key -> [{t, bps, rx, drop, lost}]
    cards: new Map(), // key -> {root, parts...}
    serverOffsetMs: 0,
    lastOk: 0,
    failing: false,
    detail: null, // {tenant, stream, key, hls, timer, json}
  };

  // ---- formatting ------------------------------------------------------------------------

  function fmtBps(bps) {
    if (bps === null || bps === undefined) return "—";
    if (bps >= 1e6) return (bps / 1e6).toFixed(bps >= 1e7 ? 1 : 2) + " Mb/s";
    if (bps >= 1e3) return Math.round(bps / 1e3) + " kb/s";
    return bps + " b/s";
  }

  function fmtDuration(ms) {
    if (!(ms >= 0)) return "—";
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + pad(m) + "m";
    if (m > 0) return m + "m " + pad(s) + "s";
    return s + "s";
  }

  function fmtPct(x) {
    if (x === null || x === undefined) return "—";
    const p = x * 100;
    return (p >= 10 ? p.toFixed(0) : p.toFixed(p >= 1 ? 1 : 2)) + "%";
  }

  function reasonText(r) {
    switch (r.code) {
      case "low_bitrate":
        return "low bitrate " + fmtBps(r.bps) + " < " + fmtBps(r.threshold_bps);
      case "high_drop_rate":
        return "drops " + fmtPct(r.rate) + " > " + fmtPct(r.threshold);
      case "high_loss_rate":
        return "loss " + fmtPct(r.rate) + " > " + fmtPct(r.threshold);
      case "no_keyframe":
        return "no keyframe for " + fmtDuration(r.for_ms);
      case "no_video":
        return "no decodable video (no SPS/PPS) for " + fmtDuration(r.for_ms);
      case "timestamp_jump":
        return "timestamps jumped";
      case "competing_publishers":
        return "competing publishers on one key";
      case "over_bitrate_quota":
        return "over its bitrate quota " + fmtBps(r.bps) + " > " + fmtBps(r.max_bps);
      default:
        return String(r.code || "unknown");
    }
  }

  const reasonsText = (s) => (s.reasons || []).map(reasonText).join("; ");
  const keyOf = (s) => s.tenant + "/" + s.stream;
  const serverNow = () => Date.now() + state.serverOffsetMs;

  /** What the "uptime" column says for a stream. */
  function uptimeText(s) {
    if (s.status === "healthy" || s.status === "warning") {
      return s.connected_since_ms ? fmtDuration(serverNow() - s.connected_since_ms) : "live";
    }
    const left = s.publisher_left_ms || s.status_since_ms;
    if (s.status === "reconnecting" && left) return "away " + fmtDuration(serverNow() - left);
    return "—";
  }

  /** Drop rate over the last DROP_WINDOW_MS of samples; null when no packet counts exist. */
  function dropRate(key, field) {
    const h = state.samples.get(key);
    if (!h || h.length < 2) return null;
    const last = h[h.length - 1];
    if (last.rx === null) return null;
    let first = last;
    for (let i = h.length - 1; i >= 0 && last.t - h[i].t <= DROP_WINDOW_MS; i--) {
      if (h[i].rx !== null) first = h[i];
    }
    const rx = last.rx - first.rx;
    const bad = last[field] - first[field];
    if (rx + bad <= 0 || rx < 0 || bad < 0) return 0;
    return bad / (rx + bad);
  }

  function dropText(s) {
    if (s.protocol !== "srt") return s.protocol ? "n/a" : "—";
    return fmtPct(dropRate(keyOf(s), "drop"));
  }

  // ---- sparklines --------------------------------------------------------------------------

  function drawSpark(svg, samples, n) {
    const pts = samples.slice(-n);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (pts.length < 2) return;
    const W = 300;
    const H = 60;
    const max = Math.max(1, ...pts.map((p) => p.bps || 0)) * 1.1;
    const x = (i) => ((i + (n - pts.length)) / (n - 1)) * W;
    const y = (v) => H - ((v || 0) / max) * (H - 2) - 1;
    const line = pts.map((p, i) => x(i).toFixed(1) + "," + y(p.bps).toFixed(1)).join(" ");
    const area = document.createElementNS(SVG_NS, "polygon");
    area.setAttribute("points", x(0).toFixed(1) + "," + H + " " + line + " " + W + "," + H);
    const pl = document.createElementNS(SVG_NS, "polyline");
    pl.setAttribute("points", line);
    svg.appendChild(area);
    svg.appendChild(pl);
  }

  function newSpark(cls) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", cls);
    svg.setAttribute("viewBox", "0 0 300 60");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    return svg;
  }

  // ---- overview ------------------------------------------------------------------------------

  function stat(label) {
    const d = el("div");
    const b = el("b", "", "—");
    d.appendChild(b);
    d.appendChild(el("small", "", label));
    return { d, b };
  }

  function makeCard(s) {
    const root = el("a", "card");
    root.setAttribute("role", "listitem");
    root.href = "#/s/" + encodeURIComponent(s.tenant) + "/" + encodeURIComponent(s.stream);
    root.dataset.tenant = s.tenant;
    root.dataset.stream = s.stream;
    const top = el("div", "top");
    const name = el("span", "name");
    name.appendChild(el("span", "tenant", s.tenant + " / "));
    name.appendChild(document.createTextNode(s.stream));
    name.title = s.tenant + "/" + s.stream;
    const badge = el("span", "badge status");
    top.appendChild(name);
    top.appendChild(badge);
    const reason = el("div", "reason");
    const spark = newSpark("spark");
    const stats = el("div", "stats");
    const bitrate = stat("bitrate");
    const drops = stat("drops");
    const uptime = stat("uptime");
    const worker = stat("worker");
    worker.d.className = "worker";
    for (const x of [bitrate, drops, uptime, worker]) stats.appendChild(x.d);
    const meta = el("div", "meta");
    for (const x of [top, reason, spark, stats, meta]) root.appendChild(x);
    return { root, badge, reason, spark, bitrate, drops, uptime, worker, meta };
  }

  function updateCard(c, s) {
    const key = keyOf(s);
    c.root.className = "card " + s.status;
    c.root.dataset.status = s.status;
    c.badge.className = "badge status " + s.status;
    c.badge.textContent = s.status;
    c.reason.textContent = reasonsText(s);
    c.bitrate.b.textContent = fmtBps(s.bitrate_bps);
    c.drops.b.textContent = dropText(s);
    c.uptime.b.textContent = uptimeText(s);
    c.worker.b.textContent = s.worker || "—";
    c.worker.d.title = s.worker || "";
    const meta = [s.protocol, s.codecs, s.resolution].filter(Boolean);
    if (s.reconnects) meta.push(s.reconnects + " reconnect" + (s.reconnects > 1 ? "s" : ""));
    c.meta.textContent = meta.join(" · ") || "\u00a0";
    drawSpark(c.spark, state.samples.get(key) || [], SPARK_SAMPLES);
  }

  function renderOverview(list) {
    // A fixed order (tenant, then stream name): a card does not move when its status
    // changes, so the eye finds it where it was.
    const sorted = list.slice().sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
    const grid = $("grid");
    const seen = new Set();
    sorted.forEach((s, i) => {
      const key = keyOf(s);
      seen.add(key);
      let c = state.cards.get(key);
      if (!c) {
        c = makeCard(s);
        state.cards.set(key, c);
      }
      updateCard(c, s);
      if (grid.children[i] !== c.root) grid.insertBefore(c.root, grid.children[i] || null);
    });
    for (const [key, c] of state.cards) {
      if (!seen.has(key)) {
        c.root.remove();
        state.cards.delete(key);
      }
    }
    $("empty").hidden = list.length > 0;

    const counts = {};
    for (const s of list) counts[s.status] = (counts[s.status] || 0) + 1;
    const summary = $("summary");
    summary.textContent = "";
    summary.appendChild(el("span", "", list.length + " stream" + (list.length === 1 ? "" : "s")));
    for (const st of ["healthy", "warning", "reconnecting", "offline"]) {
      if (counts[st]) summary.appendChild(el("span", "to " + st, counts[st] + " " + st));
    }
  }

  // ---- polling -----------------------------------------------------------------------------

  function record(list) {
    const now = Date.now();
    const live = new Set();
    for (const s of list) {
      const key = keyOf(s);
      live.add(key);
      state.streams.set(key, s);
      let h = state.samples.get(key);
      if (!h) state.samples.set(key, (h = []));
      const p = s.packets;
      h.push({
        t: now,
        bps: s.bitrate_bps ?? null,
        rx: p ? p.received : null,
        drop: p ? p.dropped : 0,
        lost: p ? p.lost : 0,
      });
      if (h.length > HISTORY_SAMPLES) h.splice(0, h.length - HISTORY_SAMPLES);
    }
    for (const key of [...state.samples.keys()]) {
      if (!live.has(key)) {
        state.samples.delete(key);
        state.streams.delete(key);
      }
    }
  }

  function setConn(ok, text) {
    const c = $("conn");
    c.className = ok ? "conn" : "conn bad";
    c.textContent = text;
    const b = $("banner");
    b.hidden = ok;
    if (!ok) b.textContent = "The API does not answer: the figures below are stale. Retrying.";
  }

  // With --admin-token set every API call needs the token: asked once, kept for this tab.
  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function askToken() {
    if (state.tokenAsked) return;
    state.tokenAsked = true;
    const t = prompt("Admin token, operator or tenant (kept for this browser tab only)");
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
  }

  async function poll() {
    try {
      const r = await fetch("/api/v1/streams", { cache: "no-store", headers: authHeaders() });
      if (r.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        askToken();
        throw new Error("admin token required");
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      state.tokenAsked = false;
      const date = Date.parse(r.headers.get("date") || "");
      if (!Number.isNaN(date)) {
        // The Date header has second resolution: only correct a clear skew.
        const off = date + 500 - Date.now();
        if (Math.abs(off - state.serverOffsetMs) > 1500) state.serverOffsetMs = off;
      }
      const list = await r.json();
      record(list);
      renderOverview(list);
      if (state.detail) renderDetailLive();
      state.lastOk = Date.now();
      setConn(true, "updated " + new Date().toLocaleTimeString());
    } catch (e) {
      setConn(false, "API unreachable (" + e.message + ")");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // ---- detail view -----------------------------------------------------------------------------

  function parseRoute() {
    const m = /^#\/s\/([^/]+)\/([^/]+)$/.exec(location.hash);
    if (!m) return null;
    try {
      return { tenant: decodeURIComponent(m[1]), stream: decodeURIComponent(m[2]) };
    } catch (_) {
      return null;
    }
  }

  function route() {
    const r = parseRoute();
    if (state.detail && (!r || keyOf(r) !== state.detail.key)) closeDetail();
    $("overview").hidden = !!r;
    $("detail").hidden = !r;
    if (r && !state.detail) openDetail(r);
  }

  function playerNote(text) {
    $("d-player-note").textContent = text;
  }

  // Signed playback: a tenant that requires a token answers the preview's playlist with 403;
  // the page then mints a short token with the admin token it already has and plays with it
  // (a new one each time the last expires). A worker without --admin-token cannot mint.
  async function mintPreviewToken(d) {
    const r = await fetch(
      "/api/v1/tenants/" + encodeURIComponent(d.tenant) + "/playback-tokens",
      {
        method: "POST",
        cache: "no-store",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify({ stream: d.stream, ttl_s: PREVIEW_TOKEN_TTL_S }),
      },
    );
    // (The overview's poll asks for the admin token when the API wants one.)
    if (r.status === 401) throw Object.assign(new Error("the admin token is required"), { soon: true });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
    return body.token;
  }

  function retryPlayer(d, ms) {
    d.retry = setTimeout(() => {
      if (d === state.detail) startPlayer(d);
    }, ms);
  }

  // Low latency: a playlist with EXT-X-PART-INF has LL-HLS parts; the preview then plays
  // with hls.js's lowLatencyMode at the playlist's PART-HOLD-BACK (no liveSyncDurationCount,
  // which would override it), else three segments behind live. Anything but a readable
  // playlist (a 403 for a signed stream, a 404 before the first segment) means the regular
  // mode: hls.js then reports the error as before.
  async function previewMode(url) {
    try {
      const r = await fetch(url, { cache: "no-store" });
      if (r.ok && (await r.text()).includes("#EXT-X-PART-INF:")) return "low-latency";
    } catch (_) {
      /* the regular mode */
    }
    return "regular";
  }

  function hlsConfig(mode) {
    return mode === "low-latency"
      ? { lowLatencyMode: true, manifestLoadingMaxRetry: 2 }
      : { lowLatencyMode: false, liveSyncDurationCount: 3, manifestLoadingMaxRetry: 2 };
  }

  function startPlayer(d) {
    const video = $("d-video");
    const path =
      "/hls/" + encodeURIComponent(d.tenant) + "/" + encodeURIComponent(d.stream) + "/index.m3u8";
    const url = d.token ? path + "?token=" + encodeURIComponent(d.token) : path;
    video.muted = true;
    if (window.Hls && window.Hls.isSupported()) {
      previewMode(url).then((mode) => {
        if (d === state.detail && !d.hls) startHls(d, video, path, url, mode);
      });
      playerNote("loading " + path);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = url; // Safari plays HLS natively (LL-HLS included).
      video.play().catch(() => {});
      playerNote("playing " + url + " (native HLS)");
    } else {
      playerNote("this browser has neither MediaSource nor native HLS: no preview");
    }
  }

  function startHls(d, video, path, url, mode) {
    const hls = new window.Hls(hlsConfig(mode));
    d.hls = hls;
    d.mode = mode;
    video.dataset.mode = mode;
    hls.on(window.Hls.Events.MANIFEST_PARSED, () => {
      playerNote(
        "playing " +
          path +
          (mode === "low-latency" ? " (low latency: LL-HLS)" : "") +
          (d.token ? " (signed playback: a preview token)" : ""),
      );
      video.play().catch(() => playerNote("press play (the browser blocked autoplay)"));
    });
    hls.on(window.Hls.Events.ERROR, (_ev, data) => {
      if (!data.fatal || d !== state.detail) return;
      hls.destroy();
      d.hls = null;
      if (data.response && data.response.code === 403) {
        playerNote("signed playback: minting a preview token");
        mintPreviewToken(d).then(
          (token) => {
            if (d !== state.detail) return;
            d.token = token;
            // At once the first time; later (a token refused again) not in a tight loop.
            retryPlayer(d, d.minted++ ? 2000 : 0);
          },
          (e) => {
            if (d !== state.detail) return;
            playerNote(
              "this stream needs a signed playback token and the preview cannot mint one: " +
                e.message,
            );
            retryPlayer(d, e.soon ? 2000 : 10000);
          },
        );
        return;
      }
      playerNote("preview error: " + data.details + "; retrying");
      retryPlayer(d, 2000);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }

  function openDetail(r) {
    const d = {
      tenant: r.tenant,
      stream: r.stream,
      key: keyOf(r),
      hls: null,
      timer: null,
      retry: null,
      token: null, // a playback token, for a signed tenant's stream
      minted: 0,
      json: null,
    };
    state.detail = d;
    $("d-title").textContent = r.tenant + " / " + r.stream;
    $("d-history").textContent = "";
    $("d-facts").textContent = "";
    $("d-admin-note").textContent = "";
    startPlayer(d);
    const load = async () => {
      try {
        const res = await fetch(
          "/api/v1/streams/" + encodeURIComponent(r.tenant) + "/" + encodeURIComponent(r.stream),
          { cache: "no-store", headers: authHeaders() },
        );
        if (d !== state.detail) return;
        if (res.status === 404) {
          d.json = null;
          $("d-status").className = "badge";
          $("d-status").textContent = "unknown";
        } else if (res.ok) {
          d.json = await res.json();
          renderHistory(d.json.history || []);
        }
      } catch (_) {
        /* the overview poll reports the API's state */
      }
      if (d === state.detail) d.timer = setTimeout(load, DETAIL_POLL_MS);
    };
    load();
    renderDetailLive();
  }

  function closeDetail() {
    const d = state.detail;
    state.detail = null;
    if (!d) return;
    clearTimeout(d.timer);
    clearTimeout(d.retry);
    if (d.hls) d.hls.destroy();
    const video = $("d-video");
    video.pause();
    video.removeAttribute("src");
    video.load();
  }

  /** The parts of the detail view that follow the once-a-second overview poll. */
  function renderDetailLive() {
    const d = state.detail;
    const listed = state.streams.get(d.key);
    // The list leaves out this worker's last figures once the publisher has gone; the
    // stream's own call (every 2 s) still has them (protocol, reconnects...).
    const s = listed && d.json ? { ...listed } : listed;
    if (s && d.json) {
      for (const [k, v] of Object.entries(d.json)) {
        // Not the last connection's bitrate: a stream without a publisher receives nothing.
        if (k !== "bitrate_bps" && (s[k] === null || s[k] === undefined)) s[k] = v;
      }
    }
    const badge = $("d-status");
    if (!s) {
      badge.className = "badge";
      badge.textContent = "unknown";
      $("d-reason").textContent = "";
      return;
    }
    badge.className = "badge status " + s.status;
    badge.textContent = s.status;
    $("detail").dataset.status = s.status;
    $("d-reason").textContent = reasonsText(s);
    const video = $("d-video");
    const facts = [
      ["bitrate", fmtBps(s.bitrate_bps)],
      ["drop rate (10 s)", dropText(s)],
      ["loss rate (10 s)", s.protocol === "srt" ? fmtPct(dropRate(d.key, "lost")) : "n/a"],
      ["uptime", uptimeText(s)],
      ["worker", s.worker || "—"],
      ["protocol", s.protocol || "—"],
      ["codecs", s.codecs || "—"],
      ["resolution", s.resolution || "—"],
      ["reconnects", s.reconnects ?? "—"],
      ["epoch", s.epoch],
      ["media sequence", s.media_sequence],
      ["segments", s.segments],
      ["playlist", { href: s.playlist }],
      ["preview position", video.currentTime ? video.currentTime.toFixed(1) + " s" : "—"],
    ];
    if (d.mode) facts.push(["preview mode", d.mode === "low-latency" ? "low latency (LL-HLS)" : "regular"]);
    if (d.hls && typeof d.hls.latency === "number" && d.hls.latency > 0) {
      facts.push(["preview latency", d.hls.latency.toFixed(1) + " s"]);
    }
    const dl = $("d-facts");
    dl.textContent = "";
    for (const [k, v] of facts) {
      dl.appendChild(el("dt", "", k));
      const dd = el("dd");
      if (v && v.href) {
        const a = el("a", "", v.href);
        a.href = v.href;
        dd.appendChild(a);
      } else {
        dd.textContent = String(v);
      }
      dl.appendChild(dd);
    }
    const spark = $("d-spark");
    spark.setAttribute("class", "spark big " + s.status);
    drawSpark(spark, state.samples.get(d.key) || [], HISTORY_SAMPLES);
  }

  function renderHistory(events) {
    const ol = $("d-history");
    ol.textContent = "";
    if (events.length === 0) {
      ol.appendChild(el("li", "note", "no health events yet"));
      return;
    }
    for (const e of events.slice().reverse()) {
      const li = el("li");
      const t = el("time", "", e.at_ms ? new Date(e.at_ms).toLocaleString() : "");
      li.appendChild(t);
      if (e.event === "status_changed") {
        li.appendChild(el("span", "to " + e.from, e.from));
        li.appendChild(document.createTextNode(" → "));
        li.appendChild(el("span", "to " + e.to, e.to));
      } else {
        li.appendChild(el("span", "to warning", "reasons changed"));
      }
      const why = (e.reasons || []).map(reasonText).join("; ");
      if (why) li.appendChild(document.createTextNode(": " + why));
      ol.appendChild(li);
    }
  }

  // ---- admin (kick / end) ------------------------------------------------------------------------

  async function admin(action) {
    const d = state.detail;
    if (!d) return;
    if (action === "end" && !confirm("End " + d.key + " now? Viewers get the end of the stream.")) {
      return;
    }
    const note = $("d-admin-note");
    const url =
      "/api/v1/streams/" +
      encodeURIComponent(d.tenant) +
      "/" +
      encodeURIComponent(d.stream) +
      "/" +
      action;
    for (let attempt = 0; attempt < 2; attempt++) {
      let res;
      try {
        res = await fetch(url, { method: "POST", headers: authHeaders() });
      } catch (e) {
        note.textContent = action + " failed: " + e.message;
        return;
      }
      if (res.status === 401 && attempt === 0) {
        const t = prompt("Admin token, operator or tenant (kept for this browser tab only)");
        if (!t) {
          note.textContent = action + ": the admin token is required";
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, t);
        continue;
      }
      if (res.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      const body = await res.json().catch(() => ({}));
      note.textContent = action + ": " + (body.error || body.action || "HTTP " + res.status);
      return;
    }
  }

  // ---- start -------------------------------------------------------------------------------------

  function start() {
    const params = new URLSearchParams(location.search);
    const wall = params.get("wall");
    const on = wall !== null && wall !== "0" && wall !== "false";
    document.body.classList.toggle("wall", on);
    const toggle = $("wall-toggle");
    toggle.href = on ? "?" + location.hash : "?wall=1" + location.hash;
    toggle.textContent = on ? "normal" : "wall";
    $("d-kick").addEventListener("click", () => admin("kick"));
    $("d-end").addEventListener("click", () => admin("end"));
    window.addEventListener("hashchange", route);
    route();
    poll();
  }

  start();
})();
