// Several players at once in one headless chromium (one page each), as the tests drive them
// (crates/cli/tests/players.rs, players_failover.rs; testkit's `browser` module):
//
//   node players.mjs [--seconds S] NAME ENGINE URL [NAME ENGINE URL ...]
//
// ENGINE is `hlsjs` (hls.js with lowLatencyMode), `dashjs` or `shaka` (Shaka Player, HLS or
// DASH by the URL); ENGINE may carry a JSON configuration after a colon:
// `shaka:{"streaming":{"lowLatencyMode":true}}`. Prints, one line each:
//   PLAYING NAME        once NAME's playhead advances through playback
//   NOTPLAYING NAME     if it did not within START_MS (its RESULT says why)
//   ALL_STARTED         once every player played or gave up
//   CROSSED NAME N      when NAME crossed its Nth discontinuity / period (counting the first)
//   FATAL NAME JSON     when NAME reports a fatal error
//   RESULT NAME JSON    at the end: the page's `window.report` (player_page.js)
//   DONE
// Plays until a line `STOP` on stdin (or stdin's end), or S seconds after ALL_STARTED when
// --seconds is given, or MAX_S. Judging the results is the caller's: this script exits 0
// whenever it could run the browser.
import { createInterface } from "node:readline";
import { launchChromium, openPage, servePages } from "./kit.mjs";

// Generous: two cores shared by the workers, the encoder, Redis, S3 and the browser.
const START_MS = 60000;
const MAX_S = 300;
const log = (...a) => console.log("players.mjs:", ...a);

const args = process.argv.slice(2);
let seconds = null;
if (args[0] === "--seconds") {
  seconds = Number(args[1]);
  args.splice(0, 2);
}
if (args.length === 0 || args.length % 3 !== 0) {
  console.error("usage: node players.mjs [--seconds S] NAME ENGINE URL [NAME ENGINE URL ...]");
  process.exit(2);
}
const players = [];
for (let i = 0; i < args.length; i += 3) {
  const [name, spec, url] = args.slice(i, i + 3);
  const colon = spec.indexOf(":");
  const engine = colon < 0 ? spec : spec.slice(0, colon);
  const config = colon < 0 ? null : JSON.parse(spec.slice(colon + 1));
  players.push({ name, engine, config, url, page: null, crossings: 0, fatal: 0 });
}

let stopRequested = false;
const stdin = createInterface({ input: process.stdin });
stdin.on("line", (line) => {
  if (line.trim() === "STOP") stopRequested = true;
});
stdin.on("close", () => {
  if (seconds === null) stopRequested = true;
});

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
const reportOf = (p) => p.page.evaluate(() => window.report).catch((e) => ({ harness: String(e) }));

let browser;
let pages;
try {
  pages = await servePages();
  browser = await launchChromium();
  for (const p of players) {
    p.page = await openPage(browser.context, `${pages.origin}/player.html?engine=${p.engine}`, log, p.name);
    await p.page.evaluate(([e, u, c]) => window.startPlayer(e, u, c), [p.engine, p.url, p.config]);
    log(`${p.name}: ${p.engine} on ${p.url}${p.config ? ` with ${JSON.stringify(p.config)}` : ""}`);
  }
  // Every player starts at once; each is reported as it plays or gives up.
  await Promise.all(
    players.map(async (p) => {
      try {
        await p.page.waitForFunction(() => window.report.playing || window.report.fatal.length > 0, null, {
          timeout: START_MS,
          polling: 250,
        });
      } catch (_) {}
      const r = await reportOf(p);
      console.log(`${r.playing ? "PLAYING" : "NOTPLAYING"} ${p.name}`);
    }),
  );
  console.log("ALL_STARTED");
  const begun = Date.now();
  while (!stopRequested && (seconds === null || Date.now() - begun < seconds * 1000) && Date.now() - begun < MAX_S * 1000) {
    await sleep(500);
    for (const p of players) {
      const r = await reportOf(p);
      const crossings = (r.crossings || []).length;
      for (; p.crossings < crossings; p.crossings += 1) console.log(`CROSSED ${p.name} ${p.crossings + 1}`);
      for (; p.fatal < (r.fatal || []).length; p.fatal += 1) console.log(`FATAL ${p.name} ${JSON.stringify(r.fatal[p.fatal])}`);
    }
  }
  for (const p of players) {
    const r = await reportOf(p);
    console.log(`RESULT ${p.name} ${JSON.stringify(r)}`);
  }
} catch (e) {
  log("harness failure:", String(e));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  if (pages) pages.close();
  stdin.close();
  process.stdin.destroy();
}
console.log("DONE");
