// dash.js (npm, node_modules/dashjs) in Debian's headless chromium playing a tidegate
// low-latency MPD (availabilityTimeComplete="false", a ServiceDescription; docs/dash.md):
//
//   node dash_ll_player.mjs <mpd-url> <seconds>
//
// dash_player.mjs's harness (kit.mjs, player_page.js: the page on another origin than the
// tidegate worker), with dash.js's live catch-up on: dash.js takes its low-latency mode by
// itself from the MPD and its target latency and catch-up rates from the
// ServiceDescription. Prints `PLAYING` once the <video>'s currentTime advances, plays for
// <seconds> of wall time and checks: no dash.js error event, the playhead advanced over
// most of that time, dash.js is in its low-latency mode and reports a live latency. Prints
// `LATENCY <s>` (getCurrentLiveLatency()) and `TARGET <s>` (getTargetLiveDelay()), then
// PASS, or exits non-zero with the first failed check. Launches /usr/bin/chromium.
import { launchChromium, openPage, servePages } from "./kit.mjs";

const [mpd, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || "20");
if (!mpd) {
  console.error("usage: node dash_ll_player.mjs <mpd-url> <seconds>");
  process.exit(2);
}
const START_MS = 40000;
const LIVE_CATCHUP = { streaming: { liveCatchup: { enabled: true } } };
const log = (...a) => console.log("dash_ll_player.mjs:", ...a);

let browser;
let pages;
let failed = null;
try {
  pages = await servePages();
  browser = await launchChromium();
  const page = await openPage(browser.context, `${pages.origin}/player.html?engine=dashjs`, log, "dash.js");
  await page.evaluate(([u, config]) => window.startPlayer("dashjs", u, config), [mpd, LIVE_CATCHUP]);
  await page.waitForFunction(() => window.report.playing || window.report.fatal.length > 0, null, {
    timeout: START_MS,
    polling: 250,
  });
  const first = await page.evaluate(() => window.report);
  if (!first.playing) throw new Error(`dash.js did not play: ${JSON.stringify(first.fatal)}`);
  console.log("PLAYING");
  await new Promise((ok) => setTimeout(ok, seconds * 1000));
  const r = await page.evaluate(() => window.report);
  const dash = await page.evaluate(() => ({
    latency: window.player.getCurrentLiveLatency(),
    lowLatency: window.player.getLowLatencyModeEnabled(),
    target: window.player.getTargetLiveDelay(),
  }));
  // The playhead as it stands, seeks included (a catch-up seek to the live edge counts).
  const advanced = r.currentTime - first.currentTime;
  log(
    `played ${first.currentTime.toFixed(2)} -> ${r.currentTime.toFixed(2)} in ${seconds} s, ` +
      `${r.width} px wide, live latency ${dash.latency}, waiting events ${r.waiting}, ` +
      `longest stall ${r.longestStallMs} ms, period switches ${JSON.stringify(r.crossings)}`,
  );
  console.log(`LATENCY ${dash.latency}`);
  console.log(`TARGET ${dash.target}`);
  log(`low-latency mode ${dash.lowLatency}, target live delay ${dash.target} s`);
  if (r.fatal.length > 0) failed = `dash.js errors: ${JSON.stringify(r.fatal)}`;
  else if (!(r.width > 0)) failed = "no decoded picture";
  else if (advanced < seconds * 0.6) failed = `the playhead advanced ${advanced.toFixed(2)} s in ${seconds} s`;
  else if (r.longestStallMs > 15000) failed = `stalled for ${r.longestStallMs} ms`;
  else if (!dash.lowLatency) failed = "dash.js did not take its low-latency mode";
  else if (!(dash.latency > 0)) failed = `no live latency (${dash.latency})`;
} catch (e) {
  failed = String(e);
} finally {
  if (browser) await browser.close();
  if (pages) pages.close();
}
if (failed) {
  console.log("FAIL", failed);
  process.exit(1);
}
console.log("PASS");
