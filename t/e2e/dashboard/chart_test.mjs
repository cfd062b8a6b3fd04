// Unit tests of the dashboard chart's pure helpers (apid/www/chart.js), run
// by t/e2e/test_dashboard.py with `node --test` and TZ=UTC. No browser.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { niceTicks, timeLabel, timeTicks } from '../../../apid/www/chart.js';

test('y ticks are whole 1-2-5 steps covering the maximum', () => {
  assert.deepEqual(niceTicks(0), [0, 1]);
  assert.deepEqual(niceTicks(1, 4), [0, 1]);
  assert.deepEqual(niceTicks(7, 4), [0, 2, 4, 6, 8]);
  assert.deepEqual(niceTicks(389, 4), [0, 100, 200, 300, 400]);
  assert.deepEqual(niceTicks(20, 4), [0, 5, 10, 15, 20]);
  for (const max of [3, 9, 11, 99, 101, 12345]) {
    const t = niceTicks(max, 4);
    assert.ok(t[t.length - 1] >= max && t.length <= 7, `${max}: ${t}`);
    assert.ok(
      t.every((v) => Number.isInteger(v)),
      `${max}: ${t}`,
    );
  }
});

test('x ticks fall on round times, at most the number asked', () => {
  const h = 3600e3;
  const t0 = Date.UTC(2026, 10, 28, 5, 30);
  const day = timeTicks(t0, t0 + 24 * h, 12);
  assert.ok(day.length <= 13 && day.length >= 6, String(day.length));
  assert.equal(day[0], Date.UTC(2026, 10, 28, 6));
  assert.ok(day.every((ms, i) => ms % (2 * h) === 0 && (i === 0 || ms - day[i - 1] === 2 * h)));
  const month = timeTicks(t0, t0 + 30 * 24 * h, 8);
  assert.ok(month.length <= 8 && month.every((ms) => ms % (24 * h) === 0), String(month));
  assert.deepEqual(
    timeTicks(t0, t0 + 10 * 60e3, 4),
    [0, 5, 10].map((m) => Date.UTC(2026, 10, 28, 5, 30 + m)),
  );
});

test('time labels: hours within a day, dates beyond a week', () => {
  const ms = Date.UTC(2026, 10, 28, 7, 5);
  assert.equal(timeLabel(ms, 24 * 3600e3), '07:05');
  assert.equal(timeLabel(ms, 7 * 86400e3), '11-28 07:05');
  assert.equal(timeLabel(ms, 30 * 86400e3), '2026-11-28');
});
