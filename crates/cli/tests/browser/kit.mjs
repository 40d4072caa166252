// What the browser scripts share: Debian's headless chromium (never a downloaded browser)
// with a throw-away profile, and a loopback page server of their own (another origin than
// the tidegate worker's, so every playlist, MPD and segment request is cross-origin and
// needs the server's CORS headers). The player page (player_page.js) starts hls.js, dash.js
// or Shaka Player by name: `/player.html?engine=hlsjs|dashjs|shaka`.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const here = path.dirname(fileURLToPath(import.meta.url));

// The player libraries as npm installs them (package.json pins each version).
export const ENGINES = {
  hlsjs: "node_modules/hls.js/dist/hls.min.js",
  dashjs: "node_modules/dashjs/dist/modern/umd/dash.all.min.js",
  shaka: "node_modules/shaka-player/dist/shaka-player.compiled.js",
};

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  // Several players in one browser: none of their pages may be throttled as a background tab.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

// Launches chromium with a fresh profile: { context, close() } (close removes the profile).
export async function launchChromium({ width = 800, height = 480 } = {}) {
  const profile = mkdtempSync(path.join(tmpdir(), "tidegate-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width, height },
      args: CHROMIUM_ARGS,
    });
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// The page of one player: the engine's library, then the page harness (player_page.js).
function playerHtml(engine) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${engine}</title></head>
<body style="margin:0;background:#111">
<video id="v" muted playsinline autoplay style="width:640px;height:360px"></video>
<pre id="log" style="color:#ddd"></pre>
<script src="/${engine}.js"></script>
<script src="/player_page.js"></script>
</body></html>`;
}

// Serves, on a loopback port of its own: `/player.html?engine=E` (the player page),
// `/E.js` (each engine's library), `/player_page.js`, and `extra` (path -> [content-type,
// body]; `/` answers `extra["/"]` or the hls.js page). Returns { origin, close() }.
export async function servePages(extra = {}) {
  const files = { "/player_page.js": ["text/javascript", readFileSync(path.join(here, "player_page.js"))] };
  for (const [engine, file] of Object.entries(ENGINES)) {
    files[`/${engine}.js`] = ["text/javascript", readFileSync(path.join(here, file))];
  }
  files["/favicon.ico"] = ["image/x-icon", ""];
  Object.assign(files, extra);
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://page");
    let file = files[url.pathname];
    if (!file && url.pathname === "/player.html") {
      const engine = url.searchParams.get("engine") || "hlsjs";
      file = ENGINES[engine] ? ["text/html; charset=utf-8", playerHtml(engine)] : null;
    }
    if (!file) {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found\n");
      return;
    }
    res.writeHead(200, { "Content-Type": file[0] });
    res.end(file[1]);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => server.close(),
  };
}

// Opens a page of `context` on `url`, logging the page's console errors with `prefix`.
export async function openPage(context, url, log, prefix) {
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") log(`${prefix} page console:`, m.text().slice(0, 300));
  });
  page.on("pageerror", (e) => log(`${prefix} page error:`, String(e).slice(0, 300)));
  await page.goto(url, { waitUntil: "load" });
  return page;
}
