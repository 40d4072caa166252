// Drives Debian's headless chromium against a running tidegate and checks the dashboard:
//
//   node dashboard.mjs <base-url> <tenant/stream> <publisher-pid> <artifact-dir>
//
// 1. the stream appears on the overview with status `healthy` (green), bitrate and sparkline;
// 2. its detail view plays the HLS preview (hls.js over MediaSource): the <video>'s
//    currentTime advances; hls.js runs in low-latency mode exactly when the playlist has
//    LL-HLS parts (EXT-X-PART-INF), and the page says which ("preview mode: ...");
// 3. the publisher is degraded (SIGSTOP: its connection stays open, its bitrate drops to
//    zero) and the page turns `warning` (amber) with the reason, in the detail view and on
//    the overview;
// 4. with TIDEGATE_ADMIN_TOKEN set, the page asks for the token once (at load if reads need
//    it, else at the kick) and the detail view's kick button turns the stream `reconnecting`
//    (blue).
// Screenshots go to <artifact-dir>/dashboard-*.png. Exits non-zero with a message on the
// first failed check. Never downloads a browser: it launches /usr/bin/chromium.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [base, streamKey, pidArg, artifacts] = process.argv.slice(2);
if (!base || !streamKey || !pidArg || !artifacts) {
  console.error("usage: node dashboard.mjs <base-url> <tenant/stream> <publisher-pid> <artifact-dir>");
  process.exit(2);
}
// The server's --admin-token, typed into the page's prompt for the kick button.
const ADMIN_TOKEN = process.env.TIDEGATE_ADMIN_TOKEN || "";
const [tenant, stream] = streamKey.split("/");
const publisherPid = Number(pidArg);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const GREEN = "rgb(46, 160, 67)";
const AMBER = "rgb(210, 153, 34)";
const BLUE = "rgb(56, 139, 253)";
// Generous: the CI machine has two cores shared with the server, the encoder and the browser.
const STEP_MS = 30000;

const log = (...a) => console.log("dashboard.mjs:", ...a);
mkdirSync(artifacts, { recursive: true });
const shot = async (page, name) => {
  const file = path.join(artifacts, `dashboard-${name}.png`);
  await page.screenshot({ path: file });
  log("screenshot", file);
};

const profile = mkdtempSync(path.join(tmpdir(), "tidegate-chromium-"));
let context;
let page;
let failed = false;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
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
  page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log("page console:", m.type(), m.text());
  });
  // The page asks for the admin token (window.prompt) the first time the server answers 401:
  // at load when the server wants it for every API call, else at the kick below.
  let tokenPrompts = 0;
  page.on("dialog", async (d) => {
    if (d.type() === "prompt" && ADMIN_TOKEN) {
      tokenPrompts += 1;
      await d.accept(ADMIN_TOKEN);
    } else {
      await d.dismiss();
    }
  });
  page.on("pageerror", (e) => {
    log("page error:", e.message);
    failed = true;
  });

  await page.goto(base + "/", { waitUntil: "load" });
  const mse = await page.evaluate(() => ({
    mediaSource: typeof MediaSource !== "undefined",
    h264: typeof MediaSource !== "undefined" &&
      MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f"'),
    aac: typeof MediaSource !== "undefined" &&
      MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"'),
    hlsjs: typeof Hls !== "undefined" && Hls.isSupported() ? Hls.version : null,
    ua: navigator.userAgent,
  }));
  log("browser:", JSON.stringify(mse));
  if (!mse.h264) throw new Error("this chromium cannot decode H.264 in MediaSource: no preview can play");
  if (!mse.hlsjs) throw new Error("hls.js did not load or finds no MediaSource");

  // 1. The stream on the overview, healthy and green.
  const card = page.locator(`.card[data-tenant="${tenant}"][data-stream="${stream}"]`);
  await card.and(page.locator('[data-status="healthy"]')).waitFor({ timeout: STEP_MS });
  const badge = card.locator(".badge");
  const healthyText = (await badge.textContent()).trim();
  const healthyColour = await badge.evaluate((e) => getComputedStyle(e).backgroundColor);
  const healthyBorder = await card.evaluate((e) => getComputedStyle(e).borderLeftColor);
  log("overview:", healthyText, healthyColour, healthyBorder);
  if (healthyText !== "healthy" || healthyColour !== GREEN || healthyBorder !== GREEN) {
    throw new Error(`healthy stream shown as "${healthyText}" in ${healthyColour}/${healthyBorder}, want healthy in ${GREEN}`);
  }
  // A few polls: bitrate figures and a sparkline line.
  await page.waitForFunction(
    (sel) => {
      const c = document.querySelector(sel);
      return c && c.querySelector(".spark polyline") && /b\/s$/.test(c.querySelector(".stats b").textContent);
    },
    `.card[data-tenant="${tenant}"][data-stream="${stream}"]`,
    { timeout: STEP_MS },
  );
  log("overview bitrate:", await card.locator(".stats b").first().textContent());
  // The worker id is shown whole: all of its text, and nothing cut off by the card's width.
  const worker = await card.locator(".stats .worker").evaluate((e) => {
    const b = e.querySelector("b");
    return { text: b.textContent, clipped: e.scrollWidth > e.clientWidth || b.scrollWidth > b.clientWidth };
  });
  log("overview worker:", JSON.stringify(worker));
  const wantWorker = process.env.WORKER_ID;
  if (!wantWorker) throw new Error("WORKER_ID (the worker id the server runs with) is not set");
  if (worker.text !== wantWorker || worker.clipped) {
    throw new Error(`worker shown as ${JSON.stringify(worker)}, want all of "${wantWorker}" unclipped`);
  }
  // The order of the cards, to compare after a status change (another stream, whose name
  // sorts first, is published too: a card must not jump ahead of it).
  const cardOrder = () => page.$$eval(".card", (cs) => cs.map((c) => c.dataset.stream).join(","));
  await page.waitForFunction(() => document.querySelectorAll(".card").length >= 2, null, {
    timeout: STEP_MS,
  });
  const orderBefore = await cardOrder();
  log("overview order:", orderBefore);
  await shot(page, "overview");

  // 2. The detail view plays the preview.
  await card.click();
  await page.locator("#detail").waitFor({ state: "visible", timeout: STEP_MS });
  const video = page.locator("#d-video");
  await page.waitForFunction(() => document.getElementById("d-video").currentTime > 0.1, null, {
    timeout: STEP_MS,
    polling: 250,
  });
  const t1 = await video.evaluate((v) => v.currentTime);
  await page.waitForFunction((t) => document.getElementById("d-video").currentTime > t + 1.5, t1, {
    timeout: STEP_MS,
    polling: 250,
  });
  const t2 = await video.evaluate((v) => ({
    currentTime: v.currentTime,
    paused: v.paused,
    width: v.videoWidth,
    height: v.videoHeight,
    decoded: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : null,
  }));
  log(`preview: currentTime ${t1.toFixed(2)} -> ${t2.currentTime.toFixed(2)}, ${t2.width}x${t2.height}, frames decoded ${t2.decoded}`);
  if (!(t2.width > 0 && t2.height > 0)) throw new Error("the preview advanced without a decoded picture");
  if (t2.decoded !== null && t2.decoded < 10) throw new Error(`only ${t2.decoded} frames decoded`);
  await checkPreviewMode(page);
  await page.waitForFunction(() => document.querySelectorAll("#d-history li").length > 0, null, {
    timeout: STEP_MS,
  });
  await shot(page, "detail");

  // 3. Degrade: the encoder stalls with its connection open.
  log("SIGSTOP publisher", publisherPid);
  process.kill(publisherPid, "SIGSTOP");
  const detailBadge = page.locator("#d-status");
  await page.locator('#detail[data-status="warning"]').waitFor({ timeout: STEP_MS });
  const reason = (await page.locator("#d-reason").textContent()).trim();
  const warnColour = await detailBadge.evaluate((e) => getComputedStyle(e).backgroundColor);
  log("detail after stall:", (await detailBadge.textContent()).trim(), warnColour, JSON.stringify(reason));
  if (warnColour !== AMBER) throw new Error(`warning badge in ${warnColour}, want ${AMBER}`);
  if (!/low bitrate/.test(reason)) throw new Error(`warning without the low-bitrate reason: "${reason}"`);
  await shot(page, "detail-warning");

  await page.evaluate(() => { location.hash = "#/"; });
  await card.and(page.locator('[data-status="warning"]')).waitFor({ timeout: STEP_MS });
  const warnText = (await badge.textContent()).trim();
  const warnBorder = await card.evaluate((e) => getComputedStyle(e).borderLeftColor);
  const cardReason = (await card.locator(".reason").textContent()).trim();
  log("overview after stall:", warnText, warnBorder, JSON.stringify(cardReason));
  if (warnText !== "warning" || warnBorder !== AMBER || !/low bitrate/.test(cardReason)) {
    throw new Error(`overview shows "${warnText}" in ${warnBorder} with "${cardReason}", want warning in ${AMBER} with the reason`);
  }
  const orderAfter = await cardOrder();
  log("overview order after stall:", orderAfter);
  if (orderAfter !== orderBefore) {
    throw new Error(`the cards moved when a status changed: ${orderBefore} -> ${orderAfter}`);
  }
  await shot(page, "warning");

  // 4. Kick from the detail view: the page has asked for the admin token once (kept in
  //    sessionStorage), the server closes the connection, the stream turns reconnecting (blue).
  if (ADMIN_TOKEN) {
    await card.click();
    await page.locator("#detail").waitFor({ state: "visible", timeout: STEP_MS });
    await page.locator("#d-kick").click();
    await page.locator('#detail[data-status="reconnecting"]').waitFor({ timeout: STEP_MS });
    const kickNote = (await page.locator("#d-admin-note").textContent()).trim();
    const blue = await page.locator("#d-status").evaluate((e) => getComputedStyle(e).backgroundColor);
    const kept = await page.evaluate(() => sessionStorage.getItem("tidegate-admin-token"));
    log("after kick:", JSON.stringify(kickNote), blue, "token prompts", tokenPrompts);
    if (tokenPrompts !== 1 || kept !== ADMIN_TOKEN) {
      throw new Error(`the admin token was asked for ${tokenPrompts} times (want once, then kept for the tab)`);
    }
    // (The status check above proves the kick; the note only must not report a refusal.)
    if (!kickNote || /required|fail|HTTP [45]/i.test(kickNote)) throw new Error(`kick answered "${kickNote}"`);
    if (blue !== BLUE) throw new Error(`reconnecting badge in ${blue}, want ${BLUE}`);
    await shot(page, "reconnecting");
  }
  if (failed) throw new Error("the page threw a JavaScript error (see above)");
  log("PASS");
} catch (e) {
  log("FAIL:", e.message);
  if (page) await shot(page, "failure").catch(() => {});
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

// The preview's hls.js mode matches the playlist: low latency with EXT-X-PART-INF, regular
// without; the page shows it among the facts. Logs `preview mode: <mode> (...)` for the test.
async function checkPreviewMode(page) {
  const seen = await page.evaluate(async ([t, s]) => {
    const url = "/hls/" + encodeURIComponent(t) + "/" + encodeURIComponent(s) + "/index.m3u8";
    const text = await (await fetch(url, { cache: "no-store" })).text();
    const facts = [...document.querySelectorAll("#d-facts dt")].map((dt) => [
      dt.textContent,
      dt.nextElementSibling ? dt.nextElementSibling.textContent : "",
    ]);
    return {
      ll: text.includes("#EXT-X-PART-INF:"),
      mode: document.getElementById("d-video").dataset.mode || null,
      fact: (facts.find(([k]) => k === "preview mode") || [null, null])[1],
    };
  }, [tenant, stream]);
  const expected = seen.ll ? "low-latency" : "regular";
  log(`preview mode: ${seen.mode} (playlist has parts: ${seen.ll}; the page says "${seen.fact}")`);
  if (seen.mode !== expected) throw new Error(`the preview chose ${seen.mode}, the playlist wants ${expected}`);
  if (!seen.fact || !seen.fact.startsWith(seen.ll ? "low latency" : "regular")) {
    throw new Error(`the page shows the preview mode as "${seen.fact}"`);
  }
}
