// dash.js (npm, node_modules/dashjs) in Debian's headless chromium playing a tidegate
// low-latency MPD (availabilityTimeComplete="false", a ServiceDescription; docs/dash.md):
//
//   node dash_ll_player.mjs <mpd-url> <seconds>
//
// dash_player.mjs's harness (the page on another origin than the tidegate worker), with
// dash.js's live catch-up on: dash.js takes its low-latency mode by itself from the MPD and
// its target latency and catch-up rates from the ServiceDescription. Prints `PLAYING` once
// the <video>'s currentTime advances, plays for <seconds> of wall time and checks: no
// dash.js error event, the playhead advanced over most of that time, dash.js is in its
// low-latency mode and reports a live latency. Prints `LATENCY <s>` (getCurrentLiveLatency())
// and `TARGET <s>` (getTargetLiveDelay()), then PASS, or exits non-zero with the first failed
// check. Launches /usr/bin/chromium.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [mpd, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || "20");
if (!mpd) {
  console.error("usage: node dash_ll_player.mjs <mpd-url> <seconds>");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const START_MS = 40000;
const here = path.dirname(fileURLToPath(import.meta.url));
const DASH_JS = readFileSync(path.join(here, "node_modules/dashjs/dist/modern/umd/dash.all.min.js"));
const log = (...a) => console.log("dash_ll_player.mjs:", ...a);

const html = `<!doctype html>
<html><head><meta charset="utf-8"><title>dash.js</title></head>
<body style="margin:0;background:#111">
<video id="v" muted playsinline style="width:640px;height:360px"></video>
<script src="/dash.all.min.js"></script>
<script>
  window.errors = [];
  window.periods = [];
  window.stalls = 0;
  window.start = (url) => {
    const v = document.getElementById("v");
    const p = dashjs.MediaPlayer().create();
    p.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      streaming: { capabilities: { useMediaCapabilitiesApi: false }, liveCatchup: { enabled: true } },
    });
    p.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      window.errors.push(JSON.stringify(e.error || e).slice(0, 400));
    });
    p.on(dashjs.MediaPlayer.events.PERIOD_SWITCH_COMPLETED, (e) => {
      window.periods.push(e.toStreamInfo ? e.toStreamInfo.id : "?");
    });
    p.on(dashjs.MediaPlayer.events.PLAYBACK_WAITING, () => { window.stalls += 1; });
    p.initialize(v, url, true);
    window.player = p;
  };
</script>
</body></html>`;

const server = createServer((req, res) => {
  if (req.url === "/dash.all.min.js") {
    res.writeHead(200, { "Content-Type": "text/javascript" });
    res.end(DASH_JS);
  } else {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(html);
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const PAGE = `http://127.0.0.1:${server.address().port}/player.html`;

const profile = mkdtempSync(path.join(tmpdir(), "tidegate-chromium-"));
let context;
let failed = null;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 800, height: 480 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") log("page console:", m.text());
  });
  await page.goto(PAGE, { waitUntil: "load" });
  await page.evaluate((u) => window.start(u), mpd);
  await page.waitForFunction(() => document.getElementById("v").currentTime > 0.5, null, {
    timeout: START_MS,
    polling: 250,
  });
  const t0 = await page.evaluate(() => document.getElementById("v").currentTime);
  console.log("PLAYING");
  const begun = Date.now();
  let last = t0;
  let longestStallMs = 0;
  let stalledSince = Date.now();
  while (Date.now() - begun < seconds * 1000) {
    await new Promise((ok) => setTimeout(ok, 500));
    const t = await page.evaluate(() => document.getElementById("v").currentTime);
    if (t > last + 0.05) {
      last = t;
      stalledSince = Date.now();
    } else {
      longestStallMs = Math.max(longestStallMs, Date.now() - stalledSince);
    }
  }
  const state = await page.evaluate(() => ({
    errors: window.errors,
    periods: window.periods,
    stalls: window.stalls,
    t: document.getElementById("v").currentTime,
    width: document.getElementById("v").videoWidth,
    latency: window.player.getCurrentLiveLatency(),
    lowLatency: window.player.getLowLatencyModeEnabled(),
    target: window.player.getTargetLiveDelay(),
  }));
  log(
    `played ${t0.toFixed(2)} -> ${state.t.toFixed(2)} in ${seconds} s, ${state.width} px wide, ` +
      `live latency ${state.latency}, waiting events ${state.stalls}, longest stall ${longestStallMs} ms, ` +
      `period switches ${JSON.stringify(state.periods)}`,
  );
  console.log(`LATENCY ${state.latency}`);
  console.log(`TARGET ${state.target}`);
  log(`low-latency mode ${state.lowLatency}, target live delay ${state.target} s`);
  if (state.errors.length > 0) failed = `dash.js errors: ${state.errors.join(" | ")}`;
  else if (!(state.width > 0)) failed = "no decoded picture";
  else if (state.t - t0 < seconds * 0.6) failed = `the playhead advanced ${(state.t - t0).toFixed(2)} s in ${seconds} s`;
  else if (longestStallMs > 15000) failed = `stalled for ${longestStallMs} ms`;
  else if (!state.lowLatency) failed = "dash.js did not take its low-latency mode";
  else if (!(state.latency > 0)) failed = `no live latency (${state.latency})`;
} catch (e) {
  failed = String(e);
} finally {
  if (context) await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
if (failed) {
  console.log("FAIL", failed);
  process.exit(1);
}
console.log("PASS");
