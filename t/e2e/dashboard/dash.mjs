// Drives the dashboard (apid/www) in Debian's chromium for
// t/e2e/test_dashboard.py: log in, add the domain, create a rule, wait for
// the test to send a message through smtpd, then find it in the activity
// log and in the chart. Asserts on the DOM and on the data behind the chart,
// never on pixels. Talks to the test over stdin/stdout:
//   stdout "NEED-MAIL"        the rule exists; send the message now
//   stdin  "SENT <queue id>"  sent and forwarded, and DASH_NOBODY refused (the
//                            activity rows exist)
//   stdout "RESULT <json>"    what was seen (the last line on success)
// Configuration in the environment: DASH_URL, DASH_TOKEN, DASH_ZONE,
// DASH_RCPT, DASH_DEST, DASH_NOBODY, DASH_OUT (a directory for screenshots), DASH_RO_TOKEN
// (a read-only token: the write controls must be gone).
import { check, env, failed, finish, lines, openPage, step } from './harness.mjs';

const URL_ = env('DASH_URL');
const TOKEN = env('DASH_TOKEN');
const ZONE = env('DASH_ZONE');
const RCPT = env('DASH_RCPT');
const DEST = env('DASH_DEST');
const OUT = env('DASH_OUT');
const RO_TOKEN = env('DASH_RO_TOKEN');
const NOBODY = env('DASH_NOBODY'); // refused at RCPT: a "rejected" row
// A rule name with markup: the dashboard must show it as text.
const RULE_NAME = '<img src=x onerror="window.__xss=1">dash & "rule"';
const SERIES_LABELS = ['Received', 'Forwarded', 'Dropped', 'Rejected', 'Delivery failed', 'Bounced'];


const h = await openPage();
const { page, loaded, pageNow } = h;

try {
  step('open the dashboard');
  await page.goto(URL_);
  await page.waitForSelector('body[data-ready="1"] #login');

  step('a bad token is refused with the API message');
  await page.fill('#token', 'mxf_' + '0'.repeat(64));
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#msg.error:not([hidden])');
  const bad = await page.textContent('#msg');
  check(/authentication/i.test(bad), `the log-in error shows the API's message: ${bad}`);
  check(await page.isHidden('#nav'), 'no navigation without a log-in');

  step('log in');
  await page.fill('#token', TOKEN);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#nav:not([hidden])');
  const who = await page.textContent('#tokname');
  check(who.includes('dash') && !who.includes('read-only'), `token name shown: ${who}`);
  check(
    await page.evaluate((t) => sessionStorage.getItem('mxf_token') === t, TOKEN),
    'token kept in sessionStorage',
  );

  step('add the domain');
  let since = await pageNow();
  await page.goto(`${URL_}#/routing`);
  await loaded('routing', since);
  since = await pageNow();
  await page.fill('#zone-add input[name=name]', ZONE);
  await page.click('#zone-add button[type=submit]');
  await page.waitForSelector(`#zones tr[data-zone="${ZONE}"]`);
  await loaded('routing', since);
  check((await page.inputValue('#zone')) === ZONE, 'the new domain is the selected zone');

  if (!(await page.isChecked('#routing-enabled'))) {
    step('enable routing');
    await page.check('#routing-enabled');
    await page.waitForSelector('#settings .badge.ready, #settings .badge.misconfigured');
  }
  // The DNS records to publish (a live check through apid's resolver).
  // If apid cannot check (e.g. 501), the dashboard must show its message.
  await page.waitForSelector('#dns .card, #msg.error:not([hidden])');
  if (await page.locator('#dns .card').count()) {
    const dnsRows = await page.$$eval('#dns-table tbody tr', (rs) =>
      rs.map((r) => ({ type: r.dataset.type, missing: r.dataset.missing === 'true' })),
    );
    check(
      dnsRows.some((r) => r.type === 'MX'),
      `the DNS records include the MX: ${JSON.stringify(dnsRows)}`,
    );
    step(`DNS records: ${dnsRows.map((r) => `${r.type}${r.missing ? ' (missing)' : ''}`).join(', ')}`);
  } else {
    console.log(`NOTE: no DNS records; the dashboard shows: ${await page.textContent('#msg')}`);
  }
  const destRow = page.locator(`#addresses-table tr[data-email="${DEST}"]`);
  check((await destRow.textContent()).includes('verified'), `${DEST} is shown verified`);

  step('create a rule');
  await page.click('#rule-new');
  await page.fill('#rule-form input[name=name]', RULE_NAME);
  await page.fill('#rule-form input[name=to]', RCPT);
  await page.selectOption('#rule-form select[name=rule-action]', 'forward');
  await page.fill('#rule-form input[name=rule-value]', DEST);
  await page.click('#rule-form button[type=submit]');
  await page.waitForSelector('#msg.info:not([hidden])');
  const ruleRow = page.locator('#rules-table tr.rule').filter({ hasText: RCPT });
  await ruleRow.waitFor();
  const ruleText = await ruleRow.textContent();
  check(ruleText.includes(RULE_NAME), `the rule name is shown as text: ${ruleText}`);
  check(ruleText.includes(`forward → ${DEST}`), `the rule's action is shown: ${ruleText}`);
  check(
    await page.evaluate(() => !document.querySelector('#rules-table img') && window.__xss === undefined),
    'markup in a rule name is not interpreted',
  );
  const ruleId = await ruleRow.getAttribute('data-id');

  step('wait for the test to send a message');
  console.log('NEED-MAIL');
  const got = await lines.next();
  const m = /^SENT (\S+)/.exec(got.value || '');
  check(m, `the test answered SENT <qid>, not ${got.value}`);
  const qid = m[1];

  step(`find ${qid} in the activity log`);
  since = await pageNow();
  await page.goto(`${URL_}#/activity`);
  await loaded('activity', since);
  await page.fill('#activity-filters input[name=to]', RCPT);
  since = await pageNow();
  await page.click('#activity-filters button[type=submit]');
  await loaded('activity', since);
  const row = page.locator(`#activity tr.entry[data-queue-id="${qid}"]`);
  await row.first().waitFor();
  const rowText = await row.first().textContent();
  check(
    (await row.first().getAttribute('data-status')) === 'forwarded',
    `the row's status is forwarded: ${rowText}`,
  );
  check(rowText.includes(RCPT), `the row shows the recipient: ${rowText}`);
  await row.first().click();
  const detail = row.first().locator('xpath=following-sibling::tr[1]');
  await detail.locator('dd[data-field=spf]').waitFor();
  const detailText = await detail.textContent();
  for (const k of ['SPF', 'DKIM', 'DMARC', 'ARC', 'Reply'])
    check(detailText.includes(k), `the expanded row shows ${k}`);
  const reply = await detail.locator('dd[data-field=reply]').textContent();
  await page.screenshot({ path: `${OUT}/dashboard-activity.png`, fullPage: true });

  step('filter the activity log by status');
  await page.fill('#activity-filters input[name=to]', '');
  await page.selectOption('#activity-filters select[name=status]', 'rejected');
  since = await pageNow();
  await page.click('#activity-filters button[type=submit]');
  await loaded('activity', since);
  const rejected = await page.$$eval('#activity tr.entry', (rs) =>
    rs.map((r) => [r.dataset.status, r.querySelector('td.to').textContent]),
  );
  check(
    rejected.length >= 1 &&
      rejected.every(([st]) => st === 'rejected') &&
      rejected.some(([, to]) => to === NOBODY),
    `status=rejected lists only the refusal: ${JSON.stringify(rejected)}`,
  );

  step('see it in the chart');
  since = await pageNow();
  await page.goto(`${URL_}#/overview`);
  await loaded('overview', since);
  const an = await page.evaluate(() => window.mxfDash.analytics);
  check(an && Array.isArray(an.series) && an.series.length > 0, 'the chart has data');
  check(
    an.totals.received >= 1 && an.totals.forwarded >= 1 && an.totals.rejected >= 1,
    `totals count the message and the refusal: ${JSON.stringify(an.totals)}`,
  );
  const shownRej = await page.textContent('#totals [data-key=rejected] .value');
  check(Number(shownRej) === an.totals.rejected, `the rejected total is shown (${shownRej})`);
  const shown = await page.textContent('#totals [data-key=forwarded] .value');
  check(Number(shown) === an.totals.forwarded, `the forwarded total is shown (${shown})`);
  const idx = an.series.findLastIndex((b) => b.forwarded > 0);
  check(idx >= 0, 'a bucket has the forwarded message');
  const drawn = await page.$$eval('#chart polyline.series', (ps) => ps.map((p) => p.dataset.key));
  check(
    ['received', 'forwarded', 'dropped', 'rejected', 'delivery_failed', 'bounced'].every((k) =>
      drawn.includes(k),
    ),
    `all six series are drawn: ${drawn}`,
  );
  // Hover that bucket's point on the forwarded line; the tooltip shows its value.
  // (Any height inside the plot selects the bucket nearest to x.)
  const pt = await page.$eval(
    '#chart polyline[data-key=forwarded]',
    (p, i) => {
      const [x] = p.getAttribute('points').split(' ')[i].split(',').map(Number);
      const box = p.ownerSVGElement.getBoundingClientRect();
      return { x: box.left + x - 1, y: box.top + box.height / 2 };
    },
    idx,
  );
  await page.mouse.move(pt.x, pt.y);
  await page.waitForSelector('.tchart-tip:not([hidden])');
  const tipIdx = Number(await page.getAttribute('.tchart-tip', 'data-index'));
  const tipVal = Number(await page.textContent('.tchart-tip [data-key=forwarded] b'));
  const tipText = await page.textContent('.tchart-tip');
  check(
    SERIES_LABELS.every((l) => tipText.includes(l)),
    `the tooltip lists every series: ${tipText}`,
  );
  check(
    tipIdx === idx && tipVal === an.series[idx].forwarded,
    `the tooltip shows bucket ${idx} (${tipIdx}) with ${an.series[idx].forwarded} forwarded (${tipVal})`,
  );
  await page.screenshot({ path: `${OUT}/dashboard.png`, fullPage: true });

  step('stacked areas');
  await page.check('#stacked');
  const areas = await page.$$eval('#chart polygon', (ps) => ps.map((p) => p.dataset.key));
  check(
    areas.join() === 'forwarded,dropped,rejected,delivery_failed,bounced',
    `stacked: one area per outcome, the total stays a line: ${areas}`,
  );
  await page.screenshot({ path: `${OUT}/dashboard-stacked.png`, fullPage: true });
  await page.uncheck('#stacked');
  check((await page.locator('#chart polygon').count()) === 0, 'unstacked: lines only');

  step('legend toggles a series; the 7-day range');
  await page.click('.tchart-key[data-key=received]');
  check(
    (await page.locator('#chart polyline[data-key=received]').count()) === 0,
    'a legend key hides its series',
  );
  await page.click('.tchart-key[data-key=received]');
  check((await page.locator('#chart polyline[data-key=received]').count()) === 1, 'and shows it again');
  since = await pageNow();
  await page.selectOption('#range', '7d');
  await page.waitForFunction(
    (s) =>
      Number(document.getElementById('view-overview').dataset.loaded) > s &&
      window.mxfDash.analytics.step === 21600,
    since,
  );
  const week = await page.evaluate(() => window.mxfDash.analytics);
  check(
    week.series.length >= 28 && week.totals.forwarded === an.totals.forwarded,
    `7 days: ${week.series.length} buckets of 6 h, forwarded ${week.totals.forwarded}`,
  );

  step('a custom range: the last two hours');
  // datetime-local values are the browser's local time.
  const [from2h, to1m] = await page.evaluate(() => {
    const local = (ms) => {
      const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
      return d.toISOString().slice(0, 16);
    };
    return [local(Date.now() - 2 * 3600e3), local(Date.now() + 120e3)];
  });
  await page.selectOption('#range', 'custom');
  await page.fill('#range-until', to1m);
  since = await pageNow();
  await page.fill('#range-since', from2h);
  await page.dispatchEvent('#range-since', 'change');
  await page.waitForFunction(
    (s) =>
      Number(document.getElementById('view-overview').dataset.loaded) > s &&
      window.mxfDash.analytics.step < 3600,
    since,
  );
  const custom = await page.evaluate(() => window.mxfDash.analytics);
  check(
    custom.step === 180 && custom.totals.forwarded === an.totals.forwarded,
    `2 hours: step ${custom.step} s, forwarded ${custom.totals.forwarded}`,
  );

  step('log out');
  await page.click('#logout');
  await page.waitForSelector('#login');
  check(await page.evaluate(() => sessionStorage.getItem('mxf_token') === null), 'log-out forgets the token');

  step('a read-only token sees no write controls');
  await page.fill('#token', RO_TOKEN);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#nav:not([hidden])');
  check((await page.textContent('#tokname')).includes('read-only'), 'the read-only token is named so');
  since = await pageNow();
  await page.goto(`${URL_}#/routing`);
  await loaded('routing', since);
  await page.waitForSelector('#rules-table');
  for (const sel of ['#zone-add', '#rule-new', '#address-add', '#catchall-form', '#rules-table button.w']) {
    check(await page.locator(sel).first().isHidden(), `${sel} is hidden for a read-only token`);
  }
  check(await page.isDisabled('#routing-enabled'), 'the routing switch is disabled for a read-only token');
  await page.click('#logout');
  await page.waitForSelector('#login');

  await finish(h, { rule_id: ruleId, qid, reply, totals: an.totals, bucket: an.series[idx], step: an.step });
} catch (err) {
  await failed(h, err, OUT);
}
