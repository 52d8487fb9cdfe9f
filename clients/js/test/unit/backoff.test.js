import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../../src/backoff.js";

test("every delay lies in [0, min(max, base * 2^attempt))", () => {
  const base = 100;
  const max = 5000;
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(max, base * 2 ** attempt);
    const backoff = new Backoff({ baseMs: base, maxMs: max });
    for (let i = 0; i < 2000; i++) {
      backoff.attempt = attempt;
      const delay = backoff.next();
      assert.ok(delay >= 0 && delay < cap, `attempt ${attempt}: ${delay} outside [0, ${cap})`);
    }
  }
});

test("delays are spread over the whole window (full jitter), not clustered at the cap", () => {
  const backoff = new Backoff({ baseMs: 1000, maxMs: 1000 });
  const samples = Array.from({ length: 4000 }, () => backoff.next());
  const min = Math.min(...samples);
  const max = Math.max(...samples);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.ok(min < 50, `smallest ${min} should be near 0`);
  assert.ok(max > 950, `largest ${max} should be near the cap`);
  assert.ok(Math.abs(mean - 500) < 40, `mean ${mean} should be near half the cap`);
  // Ten equal buckets each hold roughly a tenth.
  const buckets = new Array(10).fill(0);
  for (const s of samples) buckets[Math.floor(s / 100)]++;
  for (const b of buckets) assert.ok(b > 250 && b < 550, `bucket counts ${buckets} are not uniform`);
});

test("the cap doubles per attempt up to max, and reset() starts over", () => {
  const backoff = new Backoff({ baseMs: 500, maxMs: 30000, random: () => 0.999999 });
  const delays = Array.from({ length: 10 }, () => backoff.next());
  assert.deepEqual(delays, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999, 29999]);
  assert.equal(backoff.attempt, 10);
  backoff.reset();
  assert.equal(backoff.attempt, 0);
  assert.equal(backoff.next(), 499);
});

test("a very long outage keeps the cap finite", () => {
  const backoff = new Backoff({ baseMs: 500, maxMs: 30000 });
  backoff.attempt = 5000;
  assert.equal(backoff.cap(), 30000);
  const delay = backoff.next();
  assert.ok(Number.isFinite(delay) && delay < 30000);
});

test("bad settings are refused", () => {
  assert.throws(() => new Backoff({ baseMs: -1 }), RangeError);
  assert.throws(() => new Backoff({ maxMs: Number.NaN }), RangeError);
});
