// What both dashboard scripts share: the environment, the step log, checks,
// the stdin answers of the Python test, and a chromium page with the error
// and dialog hooks and the helpers that wait for a view to (re)load.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const T = 15000;

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

export const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
export const t0 = Date.now();
export const step = (s) => console.log(`step ${((Date.now() - t0) / 1000).toFixed(1)}s: ${s}`);
export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Dialogs are accepted; a prompt takes the next of `prompts` ('' if none).
export async function openPage() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    // As root chromium refuses its sandbox; the test runs in a private netns.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    headless: true,
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [], dialogs = [], prompts = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`console error: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    if (d.type() === 'prompt') d.accept(prompts.shift() ?? '');
    else d.accept();
  });
  page.setDefaultTimeout(T);
  // Waits for a view's (re)load that started after `since` (views stamp
  // their root with data-loaded = Date.now() in the page).
  const loaded = async (view, since = 0) => {
    await page.waitForFunction(
      ([v, s]) => {
        const el = document.getElementById(`view-${v}`);
        return el && Number(el.dataset.loaded || 0) > s;
      },
      [view, since],
    );
  };
  const pageNow = () => page.evaluate(() => Date.now());
  return { browser, page, problems, dialogs, prompts, loaded, pageNow };
}

// The end of a script: RESULT and exit 0, or the failure (with the page's
// message and a screenshot in `out`) and exit 1. Exits explicitly: stdin,
// the test's pipe, would keep node alive.
export async function finish(h, result) {
  check(h.problems.length === 0, h.problems.join('; '));
  console.log(`RESULT ${JSON.stringify({ ...result, seconds: (Date.now() - t0) / 1000 })}`);
  await h.browser.close();
  process.exit(0);
}

export async function failed(h, err, out) {
  console.log(`FAILED: ${err.message}`);
  if (h.problems.length) console.log(h.problems.join('\n'));
  try {
    console.log(`page message: ${await h.page.textContent('#msg')}`);
    await h.page.screenshot({ path: `${out}/dashboard-failure.png`, fullPage: true });
  } catch {
    /* the page may be gone */
  }
  await h.browser.close();
  process.exit(1);
}
