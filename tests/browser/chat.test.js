// The browser demo in real Chromium: two pages chat through a real Herald
// (started here, with the demo on), see each other online and typing, and
// a page whose socket is dropped while the other keeps publishing shows
// every missed message exactly once after it reconnects. Screenshots go to
// tests/browser/screenshots/; the README shows one of them.
//
// Needs Debian's Chromium at /usr/bin/chromium (CHROMIUM overrides) and the
// herald binary (HERALD_BIN, default target/debug/herald).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { launchChromium, root, startHerald, WAIT } from "./setup.js";

const shots = join(dirname(fileURLToPath(import.meta.url)), "screenshots");

let herald;
let base;
let browser;

before(async () => {
  herald = await startHerald(
    "browser",
    `[limits]\nrate_per_sec = 1000\nrate_burst = 1000\n[demo]\nenabled = true\nroot = ${JSON.stringify(root)}\n[log]\nlevel = "warn"\n`,
  );
  base = herald.base;
  browser = await launchChromium();
  mkdirSync(shots, { recursive: true });
});

after(async () => {
  await browser?.close();
  herald?.stop();
});

/** A page signed in as `name`, in the lobby. */
async function signIn(name) {
  const page = await browser.newPage({ viewport: { width: 1000, height: 560 } });
  page.on("pageerror", (error) => console.error(`${name}: ${error.message}`));
  await page.goto(`${base}/demo/`);
  await page.fill("#name", name);
  await page.click("#login button");
  await page.waitForSelector("#state[data-state=connected]", { timeout: WAIT });
  await page.waitForFunction(() => document.querySelector("#room-title")?.textContent === "lobby", null, { timeout: WAIT });
  return page;
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** The texts of a page's messages, in order. */
function texts(page) {
  return page.$$eval("#messages li:not(.notice)", (items) => items.map((item) => item.lastChild.textContent));
}

function until(page, what, arg) {
  return page.waitForFunction(what, arg, { timeout: WAIT });
}

test("two pages chat, see each other online and typing, and a dropped page recovers what it missed", async () => {
  const alice = await signIn("alice");
  const bob = await signIn("bob");

  // Presence: each sees both.
  for (const page of [alice, bob]) {
    await until(page, () => document.querySelector("#count").textContent === "(2)");
  }
  assert.deepEqual(await alice.$$eval("#users li", (items) => items.map((i) => i.textContent)), ["alice (you)", "bob"]);

  // Typing shows on the other page.
  await bob.type("#text", "hel");
  await until(alice, () => document.querySelector("#typing").textContent.includes("bob is typing"));
  await alice.screenshot({ path: join(shots, "typing.png") });

  // Messages both ways.
  await say(bob, "hello alice");
  await until(alice, () => document.querySelector("#messages").textContent.includes("hello alice"));
  await say(alice, "hi bob");
  await until(bob, () => document.querySelector("#messages").textContent.includes("hi bob"));

  // Alice's socket is dropped; bob goes on.
  await alice.click("#drop");
  await until(alice, () => document.querySelector("#state").dataset.state !== "connected");
  const missed = ["are you there?", "the train went into a tunnel", "see you on the other side"];
  for (const text of missed) await say(bob, text);
  await until(bob, (n) => document.querySelectorAll("#messages li:not(.notice)").length === n, 2 + missed.length);
  await alice.screenshot({ path: join(shots, "dropped.png") });

  // Back: every missed message, once, in order, marked recovered.
  await alice.click("#back");
  await until(alice, () => document.querySelector("#state").dataset.state === "connected");
  await until(alice, (last) => document.querySelector("#messages").textContent.includes(last), missed.at(-1));
  // A live message after the replay: anything repeated would be before it.
  await say(bob, "welcome back");
  await until(alice, () => document.querySelector("#messages").textContent.includes("welcome back"));
  assert.deepEqual(await texts(alice), ["hello alice", "hi bob", ...missed, "welcome back"]);
  const recovered = await alice.$$eval("#messages li.recovered", (items) => items.map((item) => item.lastChild.textContent));
  assert.deepEqual(recovered, missed, "the missed ones, and only those, came back as recovered");
  await alice.screenshot({ path: join(shots, "recovered.png") });
  assert.deepEqual(await texts(bob), ["hello alice", "hi bob", ...missed, "welcome back"]);
});
