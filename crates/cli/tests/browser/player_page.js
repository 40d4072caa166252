// The player page's harness (a plain browser script, served by kit.mjs after the engine's
// library). `window.startPlayer(engine, url, config)` starts hls.js (`hlsjs`), dash.js
// (`dashjs`) or Shaka Player (`shaka`) on <video id="v">; `window.report` is what the test
// reads back, kept up to date from the player's events and from the playhead sampled every
// SAMPLE_MS:
//   playing      the playhead has advanced by PLAYING_S through playback (not a seek)
//   played       seconds the playhead advanced through playback (seeks left out)
//   jumps        forward jumps larger than playback can explain (live-edge seeks, gap skips)
//   stalls       [{ at, ms }]: every time the playhead stood still longer than STALL_MS
//                while it should have played (after it first played, not paused)
//   longestStallMs, stalledMs (the one going on now)
//   fatal        errors the player gives up on (hls.js `fatal`, every dash.js ERROR event,
//                Shaka's CRITICAL severity, a failed load)
//   errors       the errors it recovers from (first ERRORS_KEPT), errorCount
//   latency      live latency as the player itself computes it, sampled every second
//                (hls.js `latency`, dash.js `getCurrentLiveLatency()`, Shaka's
//                `getStats().liveLatency`)
//   crossings    discontinuities crossed: hls.js, each new `cc` of a fragment played;
//                dash.js, each Period it switched to
//   lowLatency   hls.js: the playlist had parts (EXT-X-PART) / could block (CAN-BLOCK-RELOAD)
(function () {
  "use strict";
  const SAMPLE_MS = 100;
  const PLAYING_S = 0.5;
  const STALL_MS = 1000;
  const ERRORS_KEPT = 40;
  const video = document.getElementById("v");
  const logBox = document.getElementById("log");
  const report = {
    engine: null,
    version: null,
    url: null,
    playing: false,
    currentTime: 0,
    played: 0,
    jumps: 0,
    backJumps: 0,
    stalls: [],
    longestStallMs: 0,
    stalledMs: 0,
    waiting: 0,
    fatal: [],
    errors: [],
    errorCount: 0,
    latency: [],
    crossings: [],
    lowLatency: { parts: false, canBlockReload: false },
    width: 0,
    height: 0,
    stats: null,
  };
  window.report = report;

  const trim = (value) => {
    try {
      return JSON.stringify(value).slice(0, 300);
    } catch (_) {
      return String(value).slice(0, 300);
    }
  };
  function error(fatal, detail) {
    const item = Object.assign({ fatal, at: Date.now() / 1000, t: video.currentTime }, detail);
    if (fatal) {
      report.fatal.push(item);
    } else {
      report.errorCount += 1;
      if (report.errors.length < ERRORS_KEPT) report.errors.push(item);
    }
    logBox.textContent += `${fatal ? "FATAL " : ""}${trim(detail)}\n`;
  }
  function crossed(id) {
    if (!report.crossings.includes(id)) report.crossings.push(id);
  }
  video.addEventListener("waiting", () => {
    report.waiting += 1;
  });

  // The playhead, sampled: playback advances it by about the wall time elapsed; more is a
  // seek (a jump to the live edge, a skipped gap), less than zero a seek back.
  let lastT = null;
  let lastAt = 0;
  let advancedAt = 0;
  setInterval(() => {
    const now = performance.now();
    const t = video.currentTime;
    report.currentTime = t;
    report.width = video.videoWidth;
    report.height = video.videoHeight;
    if (lastT !== null) {
      const dt = t - lastT;
      const wall = (now - lastAt) / 1000;
      if (dt > 0.001 && dt <= wall * 2 + 0.25) {
        report.played += dt;
        if (!report.playing && report.played >= PLAYING_S) report.playing = true;
        advancedAt = now;
      } else if (dt > 0.001) {
        report.jumps += 1;
        advancedAt = now;
      } else if (dt < -0.001) {
        report.backJumps += 1;
        advancedAt = now;
      }
    }
    lastT = t;
    lastAt = now;
    if (report.playing && !video.paused && !video.ended) {
      report.stalledMs = Math.round(now - advancedAt);
      if (report.stalledMs > report.longestStallMs) report.longestStallMs = report.stalledMs;
      if (report.stalledMs > STALL_MS) {
        const last = report.stalls[report.stalls.length - 1];
        if (last && last.open) last.ms = report.stalledMs;
        else report.stalls.push({ at: Date.now() / 1000, t, ms: report.stalledMs, open: true });
      } else {
        const last = report.stalls[report.stalls.length - 1];
        if (last) last.open = false;
      }
    } else {
      advancedAt = now;
      report.stalledMs = 0;
    }
  }, SAMPLE_MS);

  let latencyOf = () => null;
  let statsOf = () => null;
  setInterval(() => {
    let l = null;
    try {
      l = latencyOf();
    } catch (_) {}
    if (report.playing && typeof l === "number" && isFinite(l) && l > 0) {
      report.latency.push(Math.round(l * 1000) / 1000);
    }
    try {
      report.stats = statsOf();
    } catch (_) {}
  }, 1000);

  function startHlsJs(url, config) {
    report.version = Hls.version;
    if (!Hls.isSupported()) throw new Error("hls.js finds no MediaSource");
    const hls = new Hls(Object.assign({ lowLatencyMode: true }, config));
    window.player = hls;
    hls.on(Hls.Events.ERROR, (_e, d) => {
      const code = d.response && typeof d.response.code === "number" ? d.response.code : null;
      const what = d.context && d.context.url ? d.context.url : d.frag ? d.frag.url : undefined;
      const reason = d.error && d.error.message ? d.error.message : d.reason;
      error(!!d.fatal, { type: d.type, details: d.details, code, url: what, reason });
    });
    hls.on(Hls.Events.LEVEL_LOADED, (_e, d) => {
      const details = d.details || {};
      if (details.partList && details.partList.length > 0) report.lowLatency.parts = true;
      if (details.canBlockReload) report.lowLatency.canBlockReload = true;
    });
    hls.on(Hls.Events.FRAG_CHANGED, (_e, d) => crossed(d.frag.cc));
    hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
    latencyOf = () => hls.latency;
    statsOf = () => ({ targetLatency: hls.targetLatency, drift: hls.drift });
    hls.loadSource(url);
    hls.attachMedia(video);
  }

  function startDashJs(url, config) {
    const p = dashjs.MediaPlayer().create();
    report.version = p.getVersion();
    window.player = p;
    // Our representation is muxed (avc1 + mp4a in one): dash.js's MediaCapabilities check
    // rejects it unless turned off (docs/dash.md).
    p.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      streaming: { capabilities: { useMediaCapabilitiesApi: false } },
    });
    if (config) p.updateSettings(config);
    p.on(dashjs.MediaPlayer.events.ERROR, (e) => error(true, { error: trim(e.error || e) }));
    p.on(dashjs.MediaPlayer.events.PERIOD_SWITCH_COMPLETED, (e) =>
      crossed(e.toStreamInfo ? e.toStreamInfo.id : "?"),
    );
    latencyOf = () => p.getCurrentLiveLatency();
    statsOf = () => ({ targetLatency: p.getTargetLiveDelay ? p.getTargetLiveDelay() : null });
    p.initialize(video, url, true);
  }

  async function startShaka(url, config) {
    shaka.polyfill.installAll();
    report.version = shaka.Player.version;
    if (!shaka.Player.isBrowserSupported()) throw new Error("Shaka Player: browser not supported");
    const p = new shaka.Player();
    window.player = p;
    await p.attach(video);
    if (config) p.configure(config);
    p.addEventListener("error", (e) => {
      const err = e.detail || {};
      error(err.severity === shaka.util.Error.Severity.CRITICAL, {
        code: err.code,
        category: err.category,
        data: trim(err.data),
      });
    });
    latencyOf = () => p.getStats().liveLatency;
    statsOf = () => {
      const s = p.getStats();
      return {
        stallsDetected: s.stallsDetected,
        gapsJumped: s.gapsJumped,
        bufferingTime: s.bufferingTime,
        liveLatency: s.liveLatency,
      };
    };
    try {
      await p.load(url);
    } catch (err) {
      error(true, { load: true, code: err && err.code, data: trim(err && err.data) });
      return;
    }
    video.play().catch(() => {});
  }

  window.startPlayer = (engine, url, config) => {
    report.engine = engine;
    report.url = url;
    try {
      if (engine === "hlsjs") startHlsJs(url, config);
      else if (engine === "dashjs") startDashJs(url, config);
      else if (engine === "shaka") startShaka(url, config).catch((e) => error(true, { start: String(e) }));
      else throw new Error(`unknown engine ${engine}`);
    } catch (e) {
      error(true, { start: String(e) });
    }
  };
})();
