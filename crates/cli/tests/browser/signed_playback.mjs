// hls.js (npm, node_modules/hls.js) in Debian's headless chromium against a tidegate serving a
// tenant with signed playback:
//
//   TIDEGATE_ADMIN_TOKEN=... node signed_playback.mjs <base-url> <tenant> <stream> <artifact-dir>
//
// The player page is served from another origin than the server (a loopback HTTP server of
// this script's own, on another port), so every playlist and segment request is
// cross-origin and needs the server's CORS headers, on 403s too.
//
// 1. With a token minted through the API, hls.js plays the multivariant playlist's signed
//    URL: the <video>'s currentTime advances, no fatal error, and every request it made to
//    /hls/ carried the token (the playlists carried it on) and got 200.
// 2. Without a token: a fatal network error whose HTTP status is 403 (which a page sees only
//    when the 403 carries CORS headers).
// 3. With a token that lives a few seconds: the playlist loads, and once the token has
//    expired the next requests (live playlist reloads) are refused with 403.
// 4. The dashboard's preview of the signed stream (the page given the admin token at its
//    prompt) is refused, mints a preview token through the API and plays.
// Screenshots go to <artifact-dir>/signed-playback-*.png. Prints PASS, or exits non-zero with
// the first failed check. Never downloads a browser: it launches /usr/bin/chromium.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { launchChromium, servePages } from "./kit.mjs";

const [base, tenant, stream, artifacts] = process.argv.slice(2);
if (!base || !tenant || !stream || !artifacts) {
  console.error("usage: node signed_playback.mjs <base-url> <tenant> <stream> <artifact-dir>");
  process.exit(2);
}
const ADMIN_TOKEN = process.env.TIDEGATE_ADMIN_TOKEN || "";
// Generous: two cores shared by the server, the encoder and the browser.
const STEP_MS = 30000;
const SHORT_TTL_S = 12;

const log = (...a) => console.log("signed_playback.mjs:", ...a);
mkdirSync(artifacts, { recursive: true });

async function mint(ttl_s) {
  const r = await fetch(`${base}/api/v1/tenants/${tenant}/playback-tokens`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ stream, ttl_s }),
  });
  const body = await r.json();
  if (r.status !== 201) throw new Error(`minting a token: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

const html = `<!doctype html>
<html><head><meta charset="utf-8"><title>signed playback</title></head>
<body style="margin:0;background:#111">
<video id="v" muted playsinline style="width:640px;height:360px"></video>
<pre id="log" style="color:#ddd"></pre>
<script src="/hlsjs.js"></script>
<script>
  window.errors = [];
  window.loaded = 0;
  window.player = null;
  // One attempt per request: a refusal turns fatal at once instead of after retries.
  const once = {
    default: {
      maxTimeToFirstByteMs: 10000,
      maxLoadTimeMs: 20000,
      timeoutRetry: { maxNumRetry: 1, retryDelayMs: 0, maxRetryDelayMs: 0 },
      errorRetry: { maxNumRetry: 0, retryDelayMs: 500, maxRetryDelayMs: 500 },
    },
  };
  window.play = (url) => {
    if (window.player) window.player.destroy();
    window.errors = [];
    window.loaded = 0;
    const v = document.getElementById("v");
    const hls = new Hls({
      liveSyncDurationCount: 2,
      manifestLoadPolicy: once,
      playlistLoadPolicy: once,
      fragLoadPolicy: once,
      steeringManifestLoadPolicy: once,
    });
    window.player = hls;
    hls.on(Hls.Events.LEVEL_LOADED, () => { window.loaded += 1; });
    hls.on(Hls.Events.MANIFEST_PARSED, () => { v.play().catch(() => {}); });
    hls.on(Hls.Events.ERROR, (_e, d) => {
      const code = d.response && typeof d.response.code === "number" ? d.response.code : null;
      window.errors.push({ type: d.type, details: d.details, fatal: !!d.fatal, code, at: Date.now() / 1000 });
      document.getElementById("log").textContent += d.details + " " + code + (d.fatal ? " fatal" : "") + "\\n";
    });
    hls.loadSource(url);
    hls.attachMedia(v);
  };
</script>
</body></html>`;

// The page's own server (kit.mjs): this page and hls.js, on a loopback port of its own
// (another origin than the tidegate server's).
let browser;
let pages;
let page;
try {
  pages = await servePages({ "/signed.html": ["text/html; charset=utf-8", html] });
  const PAGE = `${pages.origin}/signed.html`;
  browser = await launchChromium();
  const context = browser.context;
  page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") log("page console:", m.text());
  });
  // Every answer of the server's /hls/ during a phase.
  let answers = [];
  page.on("response", (r) => {
    if (r.url().startsWith(`${base}/hls/`)) answers.push({ url: r.url(), status: r.status() });
  });
  await page.goto(PAGE, { waitUntil: "load" });
  const caps = await page.evaluate(() => ({
    hls: typeof Hls !== "undefined" && Hls.isSupported() ? Hls.version : null,
    h264: MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f"'),
    origin: location.origin,
  }));
  log("page:", JSON.stringify(caps), "server:", base);
  if (!caps.hls) throw new Error("hls.js did not load or finds no MediaSource");
  if (!caps.h264) throw new Error("this chromium cannot decode H.264 in MediaSource");

  // 1. A valid token plays, from the multivariant playlist down.
  const long = await mint(600);
  const signed = `${base}/hls/${tenant}/${stream}/master.m3u8?token=${long.token}`;
  answers = [];
  await page.evaluate((u) => window.play(u), signed);
  await page.waitForFunction(() => document.getElementById("v").currentTime > 0.1, null, {
    timeout: STEP_MS,
    polling: 250,
  });
  const t1 = await page.evaluate(() => document.getElementById("v").currentTime);
  await page.waitForFunction((t) => document.getElementById("v").currentTime > t + 1.5, t1, {
    timeout: STEP_MS,
    polling: 250,
  });
  const played = await page.evaluate(() => {
    const v = document.getElementById("v");
    return { currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight, errors: window.errors };
  });
  log(`1. signed: currentTime ${t1.toFixed(2)} -> ${played.currentTime.toFixed(2)}, ${played.width}x${played.height}, ${answers.length} requests`);
  if (played.errors.some((e) => e.fatal)) throw new Error(`fatal error with a valid token: ${JSON.stringify(played.errors)}`);
  if (!(played.width > 0)) throw new Error("played without a decoded picture");
  const kinds = new Set(answers.map((a) => path.extname(new URL(a.url).pathname)));
  for (const kind of [".m3u8", ".mp4", ".m4s"]) {
    if (!kinds.has(kind)) throw new Error(`no ${kind} request seen: ${JSON.stringify(answers)}`);
  }
  for (const a of answers) {
    if (new URL(a.url).searchParams.get("token") !== long.token || a.status !== 200) {
      throw new Error(`request without the token or refused: ${JSON.stringify(a)}`);
    }
  }
  await page.screenshot({ path: path.join(artifacts, "signed-playback-playing.png") });

  // 2. No token: a fatal network error with the 403 the page can read.
  const plain = `${base}/hls/${tenant}/${stream}/index.m3u8`;
  await page.evaluate((u) => window.play(u), plain);
  await page.waitForFunction(() => window.errors.some((e) => e.fatal), null, { timeout: STEP_MS, polling: 250 });
  const refused = await page.evaluate(() => window.errors.find((e) => e.fatal));
  log("2. no token:", JSON.stringify(refused));
  if (refused.type !== "networkError" || refused.code !== 403) {
    throw new Error(`without a token: ${JSON.stringify(refused)}, want a networkError with status 403`);
  }

  // 3. A short-lived token: loads, then refused once expired.
  const short = await mint(SHORT_TTL_S);
  await page.evaluate((u) => window.play(u), `${base}${short.url}`);
  await page.waitForFunction(() => window.loaded > 0, null, { timeout: STEP_MS, polling: 250 });
  const before = await page.evaluate(() => ({
    currentTime: document.getElementById("v").currentTime,
    errors: window.errors,
  }));
  log(`3. short token (expires at ${short.expires_at}): loaded, currentTime ${before.currentTime.toFixed(2)}`);
  if (before.errors.some((e) => e.code === 403)) {
    // Possible only if the machine was so slow that the token expired before the first load.
    const late = Date.now() / 1000 >= short.expires_at;
    if (!late) throw new Error(`refused before its expiry: ${JSON.stringify(before.errors)}`);
  }
  await page.waitForFunction((exp) => window.errors.some((e) => e.code === 403 && e.at >= exp), short.expires_at, {
    timeout: (SHORT_TTL_S + 30) * 1000,
    polling: 250,
  });
  const expired = await page.evaluate(() => window.errors);
  log("3. after expiry:", JSON.stringify(expired));
  await page.screenshot({ path: path.join(artifacts, "signed-playback-expired.png") });

  // 4. The dashboard's preview mints a token with the operator's admin token, and plays.
  await page.evaluate(() => window.player && window.player.destroy());
  let prompts = 0;
  page.on("dialog", async (d) => {
    prompts += 1;
    if (d.type() === "prompt") await d.accept(ADMIN_TOKEN);
    else await d.dismiss();
  });
  await page.goto(`${base}/#/s/${tenant}/${stream}`, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("d-video").currentTime > 0.5, null, {
    timeout: STEP_MS,
    polling: 250,
  });
  const note = (await page.locator("#d-player-note").textContent()).trim();
  log(`4. dashboard preview: "${note}", token prompts ${prompts}`);
  if (!/preview token/.test(note)) throw new Error(`the preview played without saying it minted a token: "${note}"`);
  await page.screenshot({ path: path.join(artifacts, "signed-playback-dashboard.png") });
  log("PASS");
} catch (e) {
  log("FAIL:", e.message);
  if (page) await page.screenshot({ path: path.join(artifacts, "signed-playback-failure.png") }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  if (pages) pages.close();
}
