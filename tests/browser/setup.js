// What the browser tests share: a real Herald of their own (the binary on
// a free port, with a config written to a temporary directory) and Debian's
// Chromium driven by playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

/** The repository's root. */
export const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const WAIT = 10_000;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

async function untilUp(url, deadline) {
  for (;;) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} never answered`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts Herald (HERALD_BIN, default target/debug/herald) as node `nodeId`
 * with the TOML `sections` after its `[server]` one, and waits until it
 * answers. Resolves with its base URL and a `stop()`.
 */
export async function startHerald(nodeId, sections) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `herald-${nodeId}-`));
  const config = join(dir, "config.toml");
  writeFileSync(config, `[server]\nport = ${port}\nnode_id = "${nodeId}"\n${sections}`);
  const binary = process.env.HERALD_BIN ?? join(root, "target", "debug", "herald");
  // Herald reads HERALD_<SECTION>__<KEY> as config: HERALD_BIN is not one.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_") || k.includes("__")));
  const herald = spawn(binary, ["--config", config], { stdio: ["ignore", "ignore", "inherit"], env });
  const base = `http://127.0.0.1:${port}`;
  await untilUp(`${base}/healthz`, Date.now() + WAIT);
  return {
    base,
    stop() {
      herald.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Debian's Chromium (CHROMIUM overrides /usr/bin/chromium), headless. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
