// dash.js (npm, node_modules/dashjs) in Debian's headless chromium playing a tidegate MPD:
//
//   node dash_player.mjs <mpd-url> <seconds>
//
// The page (kit.mjs, player_page.js) is served from a loopback server of this script's own
// (another origin than the tidegate worker), so every MPD, segment and UTCTiming request is
// cross-origin. Prints `PLAYING` once the <video>'s playhead advances (the test then
// reconnects the publisher), then plays for <seconds> of wall time and checks: no dash.js
// error event, the playhead advanced over most of that time, and (stdout) the periods
// dash.js switched to. Prints PASS, or exits non-zero with the first failed check.
import { launchChromium, openPage, servePages } from "./kit.mjs";

const [mpd, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || "20");
if (!mpd) {
  console.error("usage: node dash_player.mjs <mpd-url> <seconds>");
  process.exit(2);
}
const START_MS = 40000;
const log = (...a) => console.log("dash_player.mjs:", ...a);

let browser;
let pages;
let failed = null;
try {
  pages = await servePages();
  browser = await launchChromium();
  const page = await openPage(browser.context, `${pages.origin}/player.html?engine=dashjs`, log, "dash.js");
  await page.evaluate((u) => window.startPlayer("dashjs", u), mpd);
  await page.waitForFunction(() => window.report.playing || window.report.fatal.length > 0, null, {
    timeout: START_MS,
    polling: 250,
  });
  const first = await page.evaluate(() => window.report);
  if (!first.playing) throw new Error(`dash.js did not play: ${JSON.stringify(first.fatal)}`);
  console.log("PLAYING");
  await new Promise((ok) => setTimeout(ok, seconds * 1000));
  const r = await page.evaluate(() => window.report);
  const played = r.played - first.played;
  log(
    `played ${played.toFixed(2)} s in ${seconds} s, ${r.width} px wide, live latency ` +
      `${r.latency[r.latency.length - 1]}, waiting events ${r.waiting}, longest stall ` +
      `${r.longestStallMs} ms, period switches ${JSON.stringify(r.crossings)}`,
  );
  console.log(`PERIODS ${r.crossings.length}`);
  if (r.fatal.length > 0) failed = `dash.js errors: ${JSON.stringify(r.fatal)}`;
  else if (!(r.width > 0)) failed = "no decoded picture";
  else if (played < seconds * 0.6) failed = `the playhead advanced ${played.toFixed(2)} s in ${seconds} s`;
  else if (r.longestStallMs > 15000) failed = `stalled for ${r.longestStallMs} ms`;
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
