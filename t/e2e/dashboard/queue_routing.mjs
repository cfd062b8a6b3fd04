// Drives the dashboard (apid/www) in Debian's chromium for
// t/e2e/test_dashboard.py::test_dashboard_queue_routing, against the real
// apid: the Queue view (state filter, hold, release, retry, delete), an
// activity row's queue entry, the catch-all, destination addresses, a rule's
// enable/disable switch, the DNS records table and the audit log view.
// Asserts on the DOM, never on pixels.
//
// What only the test can do (send mail, switch the sink, ask mxferryctl) it
// asks for over stdin/stdout:
//   stdout "NEED <verb> [args]"   the test does it and answers
//   stdin  "OK <json>" | "ERR <text>"
//   stdout "RESULT <json>"        what was seen (the last line on success)
// Configuration in the environment: DASH_URL, DASH_TOKEN (named "dash2"),
// DASH_ZONE (exists, rules for DASH_QRCPT → DASH_SLOW and DASH_RRCPT →
// DASH_DEST), DASH_SLOW (its MX tempfails until "NEED accept"), DASH_DEST
// (verified), DASH_NEWDEST (added here), DASH_OUT (screenshots), DASH_RO_TOKEN
// (a read-only token).
import { T, check, env, failed, finish, lines, openPage, step } from './harness.mjs';

const URL_ = env('DASH_URL');
const TOKEN = env('DASH_TOKEN');
const ZONE = env('DASH_ZONE');
const QRCPT = env('DASH_QRCPT');
const RRCPT = env('DASH_RRCPT');
const SLOW = env('DASH_SLOW');
const DEST = env('DASH_DEST');
const NEWDEST = env('DASH_NEWDEST');
const VOUCH = `vouch-${NEWDEST}`; // marked verified by the operator, no code
const RO_TOKEN = env('DASH_RO_TOKEN'); // read-only: sees the queue, cannot act on it
const OUT = env('DASH_OUT');

// Asks the test for something; returns its JSON answer.
async function need(...args) {
  console.log(`NEED ${args.join(' ')}`);
  const got = await lines.next();
  const line = got.value || '';
  if (line.startsWith('OK ')) return JSON.parse(line.slice(3));
  throw new Error(`the test could not do "${args.join(' ')}": ${line || 'no answer'}`);
}

const h = await openPage();
const { browser, page, problems, dialogs, prompts, loaded, pageNow } = h;
async function go(view) {
  const since = await pageNow();
  await page.goto(`${URL_}#/${view}`);
  await loaded(view, since);
}
// An info message (the API call succeeded) or the error shown instead.
async function infoMsg(re) {
  await page.waitForSelector('#msg:not([hidden])');
  const cls = await page.getAttribute('#msg', 'class');
  const text = await page.textContent('#msg');
  check(cls === 'info' && re.test(text), `message ${re}: ${cls}: ${text}`);
  await page.click('#msg button.close');
}

// The Queue view's rows: [{id, state}].
const queueRows = () =>
  page.$$eval('#queue-table tbody tr', (rs) => rs.map((r) => ({ id: r.dataset.id, state: r.dataset.state })));
// Reloads the Queue view (its Refresh button) until pred(rows) holds: the
// router applies hold/release/retry between two listings.
async function queueUntil(pred, what) {
  const end = Date.now() + T;
  for (;;) {
    const rows = await queueRows();
    if (pred(rows)) return rows;
    if (Date.now() > end) throw new Error(`check failed: ${what}: ${JSON.stringify(rows)}`);
    const since = await pageNow();
    await page.click('#queue-refresh');
    await loaded('queue', since);
    await page.waitForTimeout(200);
  }
}
async function queueState(state) {
  const since = await pageNow();
  await page.selectOption('#queue-state', state);
  await loaded('queue', since);
}
async function queueAction(qid, label) {
  const since = await pageNow();
  await page.click(`#queue-table tr[data-id="${qid}"] button:text-is("${label}")`);
  await infoMsg(new RegExp(`${qid}: ${label.toLowerCase()} done`));
  await loaded('queue', since);
}

try {
  step('log in');
  await page.goto(URL_);
  await page.waitForSelector('body[data-ready="1"] #login');
  await page.fill('#token', TOKEN);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#nav:not([hidden])');
  check((await page.textContent('#tokname')).includes('dash2'), 'the token name is shown');

  // ---------------------------------------------------------------- queue
  step('two messages deferred (their MX answers 451)');
  const qids = await need('send-deferred');
  const [q1, q2] = qids;

  step(`the activity row of ${q1}, expanded, shows its queue entry`);
  await go('activity');
  await page.fill('#activity-filters input[name=to]', QRCPT);
  await page.selectOption('#activity-filters select[name=status]', 'deferred');
  let since = await pageNow();
  await page.click('#activity-filters button[type=submit]');
  await loaded('activity', since);
  const row = page.locator(`#activity tr.entry[data-queue-id="${q1}"]`).first();
  await row.waitFor();
  check((await row.getAttribute('data-status')) === 'deferred', 'the row is deferred');
  await row.click();
  const detail = row.locator('xpath=following-sibling::tr[1]');
  const qe = detail.locator('.queue-entry');
  await qe.waitFor();
  check((await qe.getAttribute('data-id')) === q1, `the queue entry is ${q1}`);
  check((await qe.getAttribute('data-state')) === 'deferred', 'the queue entry is deferred');
  const qeText = await qe.textContent();
  check(qeText.includes('alice@sender.test'), `the queue entry shows the sender: ${qeText}`);
  const rcpt = await qe.locator('table tbody tr').evaluateAll((rs) =>
    rs.map((r) => [...r.querySelectorAll('td')].map((d) => d.textContent)),
  );
  check(
    rcpt.length === 1 && rcpt[0][0] === SLOW && rcpt[0][1] === QRCPT && rcpt[0][2] === 'deferred' &&
      Number(rcpt[0][3]) >= 1 && rcpt[0][4].startsWith('451'),
    `the queue entry's recipient: deferred after a 451: ${JSON.stringify(rcpt)}`,
  );
  check(/\d{4}-\d\d-\d\d \d\d:\d\d/.test(await qe.locator('dd[data-field=next_try]').textContent()),
    'the queue entry shows the next try');
  await page.screenshot({ path: `${OUT}/dashboard-activity-queued.png`, fullPage: true });

  step('the Queue view lists both, filtered by state');
  await go('queue');
  await queueState('deferred');
  let rows = await queueRows();
  check(
    qids.every((q) => rows.some((r) => r.id === q && r.state === 'deferred')),
    `both deferred: ${JSON.stringify(rows)}`,
  );
  const qrow = await page.textContent(`#queue-table tr[data-id="${q1}"]`);
  check(qrow.includes('alice@sender.test') && qrow.includes(SLOW) && /451/.test(
    await page.getAttribute(`#queue-table tr[data-id="${q1}"] .rcpt`, 'title')),
    `the row shows sender, recipient and its last reply: ${qrow}`);
  step('a read-only token sees the queue without its buttons');
  {
    // A tab of its own: the token lives in sessionStorage, per tab.
    const ro = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    ro.on('pageerror', (e) => problems.push(`page error (read-only tab): ${e.message}`));
    ro.setDefaultTimeout(T);
    await ro.goto(URL_);
    await ro.waitForSelector('body[data-ready="1"] #login');
    await ro.fill('#token', RO_TOKEN);
    await ro.click('#login button[type=submit]');
    await ro.waitForSelector('#nav:not([hidden])');
    await ro.goto(`${URL_}#/queue`);
    await ro.waitForSelector('#queue-table');
    const n = await ro.locator('#queue-table tbody tr').count();
    check(n === 2, `the read-only token lists the queue: ${n} rows`);
    const shown = await ro.locator('#queue-table button').evaluateAll((bs) =>
      bs.filter((b) => b.offsetParent !== null && !b.disabled).map((b) => b.textContent),
    );
    check(shown.length === 0, `no usable queue buttons for a read-only token: ${shown}`);
    await ro.close();
  }

  step('the queue in pages of one');
  await page.evaluate(() => {
    window.mxfDash.queuePerPage = 1;
  });
  await queueState('');
  const pageInfo = () => page.textContent('#view-queue .pageinfo');
  check(/Page 1 of 2 \(2 in all\)/.test(await pageInfo()), `a pager: ${await pageInfo()}`);
  const p1 = await queueRows();
  since = await pageNow();
  await page.click('#view-queue .pager button.next');
  await loaded('queue', since);
  const p2 = await queueRows();
  check(
    p1.length === 1 && p2.length === 1 && [p1[0].id, p2[0].id].sort().join() === [...qids].sort().join(),
    `one message a page, both seen: ${JSON.stringify([p1, p2])}`,
  );
  check(/Page 2 of 2/.test(await pageInfo()), `page 2: ${await pageInfo()}`);
  await page.evaluate(() => {
    window.mxfDash.queuePerPage = 100;
  });
  await queueState('hold');
  check((await queueRows()).length === 0, 'nothing on hold yet');
  check((await page.locator('#view-queue .pager').count()) === 0, 'one page: no pager');
  check(/on hold/.test(await page.textContent('#view-queue')), 'the empty list names the state');

  step(`hold ${q1}`);
  await queueState('');
  await queueAction(q1, 'Hold');
  rows = await queueUntil((rs) => rs.some((r) => r.id === q1 && r.state === 'hold'), `${q1} on hold`);
  check(
    (await page.textContent(`#queue-table tr[data-id="${q1}"] td.next`)) === 'on hold',
    'a held message has no next try',
  );
  const heldButtons = await page.locator(`#queue-table tr[data-id="${q1}"] button`).allTextContents();
  check(heldButtons.join() === 'Release,Delete', `a held message offers Release and Delete: ${heldButtons}`);
  await need('ctl-state', q1, 'hold');
  await queueState('hold');
  rows = await queueRows();
  check(rows.length === 1 && rows[0].id === q1, `the hold filter lists ${q1} only: ${JSON.stringify(rows)}`);
  await queueState('deferred');
  rows = await queueRows();
  check(rows.length === 1 && rows[0].id === q2, `the deferred filter lists ${q2} only: ${JSON.stringify(rows)}`);
  await queueState('');
  const qtext = await page.textContent('#view-queue');
  check(!/\bnull\b|undefined|NaN/.test(qtext), `no stray null/undefined in the Queue view: ${qtext}`);
  await page.screenshot({ path: `${OUT}/dashboard-queue.png`, fullPage: true });

  step(`release ${q1}`);
  await queueAction(q1, 'Release');
  // Released, it is tried again at once, and deferred again (still 451).
  await queueUntil((rs) => rs.some((r) => r.id === q1 && r.state !== 'hold'), `${q1} released`);
  await need('ctl-state', q1, 'deferred');

  step(`the sink accepts now; retry ${q1}`);
  await need('accept');
  await queueAction(q1, 'Retry');
  await queueUntil((rs) => !rs.some((r) => r.id === q1), `${q1} leaves the queue`);
  const to = await need('arrived', q1);
  check(JSON.stringify(to) === JSON.stringify([SLOW]), `${q1} arrived for ${SLOW}: ${to}`);
  await need('ctl-state', q1, 'gone');

  step(`delete ${q2}`);
  const nd = dialogs.length;
  await queueAction(q2, 'Delete');
  check(dialogs.length === nd + 1 && dialogs[nd].includes(q2), `Delete asked first: ${dialogs.slice(nd)}`);
  await queueUntil((rs) => rs.length === 0, 'the queue empty');
  check(/queue is empty/.test(await page.textContent('#view-queue')), 'the view says the queue is empty');
  await need('ctl-state', q2, 'gone');

  step(`the activity rows of ${q1} (delivered) and ${q2} (deleted) say they left the queue`);
  await go('activity');
  const row2 = page.locator(`#activity tr.entry[data-queue-id="${q1}"][data-status=deferred]`).first();
  await row2.click();
  await row2.locator('xpath=following-sibling::tr[1]').getByText('No longer in the queue.').waitFor();
  check(
    (await row2.locator('xpath=following-sibling::tr[1]').locator('.queue-entry').count()) === 0,
    'no queue entry for a delivered message',
  );
  // q2 was deleted (no outcome logged): the dashboard asks, and apid says 404.
  const row3 = page.locator(`#activity tr.entry[data-queue-id="${q2}"]`).first();
  await row3.click();
  await row3.locator('xpath=following-sibling::tr[1]').getByText('No longer in the queue.').waitFor();

  // ---------------------------------------------------------------- routing
  step('routing: the catch-all forwards to a verified address');
  await go('routing');
  check((await page.inputValue('#zone')) === ZONE, 'the zone is selected');
  await page.waitForSelector('#catchall-form');
  await page.check('#catchall-form input[name=enabled]');
  await page.selectOption('#catchall-form select[name=catchall-action]', 'forward');
  await page.fill('#catchall-form input[name=catchall-value]', DEST);
  await page.click('#catchall-form button[type=submit]');
  await infoMsg(/Catch-all saved/);
  await page.waitForFunction(
    (d) => /forward → /.test(document.querySelector('#catchall .current')?.textContent || '') &&
      document.querySelector('#catchall .current').textContent.includes(d),
    DEST,
  );
  check(
    (await page.textContent('#catchall .card > p')).includes('enabled'),
    `the catch-all is enabled: ${await page.textContent('#catchall .card > p')}`,
  );
  check(await page.isChecked('#catchall-form input[name=enabled]'), 'the form shows it enabled');

  step('the catch-all drops');
  await page.selectOption('#catchall-form select[name=catchall-action]', 'drop');
  check(await page.isHidden('#catchall-form input[name=catchall-value]'), 'drop takes no value');
  await page.click('#catchall-form button[type=submit]');
  await infoMsg(/Catch-all saved/);
  await page.waitForFunction(() => document.querySelector('#catchall .current')?.textContent === 'drop');
  check(
    (await page.inputValue('#catchall-form select[name=catchall-action]')) === 'drop',
    'the form shows drop',
  );

  step(`add the destination ${NEWDEST}`);
  const verifiedDest = page.locator(`#addresses-table tr[data-email="${DEST}"]`);
  check((await verifiedDest.getAttribute('data-verified')) === 'true', `${DEST} is verified`);
  await page.fill('#address-add input[name=email]', NEWDEST);
  await page.click('#address-add button[type=submit]');
  await infoMsg(/Verification mail sent/);
  const nrow = page.locator(`#addresses-table tr[data-email="${NEWDEST}"]`);
  await nrow.waitFor();
  check((await nrow.getAttribute('data-verified')) === 'false', `${NEWDEST} is unverified`);
  check(/pending/.test(await nrow.textContent()), `${NEWDEST} shows pending: ${await nrow.textContent()}`);
  const vm = await need('verification-mail', NEWDEST);
  check(/verify/i.test(vm.subject), `the verification mail: ${vm.subject}`);
  step(`the catch-all cannot forward to ${NEWDEST} while it is unverified`);
  await page.selectOption('#catchall-form select[name=catchall-action]', 'forward');
  await page.fill('#catchall-form input[name=catchall-value]', NEWDEST);
  await page.click('#catchall-form button[type=submit]');
  await page.waitForSelector('#msg.error:not([hidden])');
  const refused = await page.textContent('#msg');
  check(/not verified/.test(refused), `the API's refusal is shown: ${refused}`);
  await page.click('#msg button.close');
  check((await page.textContent('#catchall .current')) === 'drop', 'the catch-all still drops');

  step(`a wrong code is refused with the API's message, the right one verifies ${NEWDEST}`);
  prompts.push('a'.repeat(20));
  await nrow.locator('button:text-is("Enter code")').click();
  await page.waitForSelector('#msg.error:not([hidden])');
  const wrong = await page.textContent('#msg');
  check(/code 1\d\d\d/.test(wrong), `the API's error is shown: ${wrong}`);
  await page.click('#msg button.close');
  check((await nrow.getAttribute('data-verified')) === 'false', 'still unverified');
  prompts.push(vm.code);
  await nrow.locator('button:text-is("Enter code")').click();
  await infoMsg(/verified/);
  await page.waitForSelector(`#addresses-table tr[data-email="${NEWDEST}"][data-verified=true]`);
  check(
    (await nrow.locator('button:text-is("Enter code")').count()) === 0,
    'a verified address offers no code entry',
  );
  step(`remove ${NEWDEST}`);
  await nrow.locator('button:text-is("Remove")').click();
  await infoMsg(/removed/);
  await nrow.waitFor({ state: 'detached' });
  check(await verifiedDest.isVisible(), `${DEST} stays`);

  step(`the operator vouches for ${VOUCH}, then removes it`);
  await page.fill('#address-add input[name=email]', VOUCH);
  await page.click('#address-add button[type=submit]');
  await infoMsg(/Verification mail sent/);
  const vrow = page.locator(`#addresses-table tr[data-email="${VOUCH}"]`);
  await vrow.waitFor();
  const nv = dialogs.length;
  await vrow.locator('button:text-is("Mark verified")').click();
  await infoMsg(/marked verified/);
  check(dialogs.length === nv + 1 && dialogs[nv].includes(VOUCH), `Mark verified asked first: ${dialogs.slice(nv)}`);
  await page.waitForSelector(`#addresses-table tr[data-email="${VOUCH}"][data-verified=true]`);
  await vrow.locator('button:text-is("Remove")').click();
  await infoMsg(/removed/);
  await vrow.waitFor({ state: 'detached' });

  step(`disable and enable the rule for ${RRCPT}`);
  const rrow = () => page.locator('#rules-table tr.rule').filter({ hasText: RRCPT });
  check((await rrow().getAttribute('class')) === 'rule', 'the rule starts enabled');
  await rrow().locator('button:text-is("Disable")').click();
  await page.waitForSelector(`#rules-table tr.rule.disabled[data-id="${await rrow().getAttribute('data-id')}"]`);
  check(/disabled/.test(await rrow().textContent()), 'its state says disabled');
  check(await rrow().locator('button:text-is("Enable")').isVisible(), 'and offers Enable');
  const qrule = page.locator('#rules-table tr.rule').filter({ hasText: QRCPT });
  check((await qrule.getAttribute('class')) === 'rule', 'the other rule stays enabled');
  await rrow().locator('button:text-is("Enable")').click();
  await page.waitForFunction(
    (r) => [...document.querySelectorAll('#rules-table tr.rule')].some(
      (tr) => tr.textContent.includes(r) && tr.className === 'rule'),
    RRCPT,
  );

  step('the DNS records: the MX found, SPF wrong, DMARC missing');
  await page.waitForSelector('#dns-table');
  const dns = await page.$$eval('#dns-table tbody tr', (rs) =>
    rs.map((r) => ({
      type: r.dataset.type,
      name: r.children[1].textContent,
      content: r.children[2].textContent,
      status: r.dataset.status,
      missing: r.dataset.missing === 'true',
      optional: r.dataset.optional === 'true',
      live: r.children[5].textContent,
    })),
  );
  const mx = dns.find((r) => r.type === 'MX');
  check(mx && !mx.missing && mx.status === 'ok' && /ok/.test(mx.live), `the MX row is ok: ${JSON.stringify(dns)}`);
  const dmarc = dns.find((r) => r.name === `_dmarc.${ZONE}`);
  check(dmarc && dmarc.missing && /missing/.test(dmarc.live), `DMARC is marked missing: ${JSON.stringify(dmarc)}`);
  const spf = dns.find((r) => r.type === 'TXT' && r.name === ZONE);
  check(
    spf && spf.missing && spf.status === 'wrong' && /wrong/.test(spf.live) && spf.content.includes('found: v=spf1 -all'),
    `SPF is marked wrong, with what was found: ${JSON.stringify(spf)}`,
  );
  // MTA-STS and TLS-RPT are optional: shown as absent, not counted.
  const opt = dns.filter((r) => r.optional);
  check(opt.length >= 1 && opt.every((r) => r.status !== 'ok' && /optional/.test(r.live)),
    `the optional records are marked so: ${JSON.stringify(opt)}`);
  const nmiss = dns.filter((r) => r.missing && !r.optional).length;
  check(
    (await page.textContent('#dns .card > p')).includes(`${nmiss} record`),
    `the summary counts ${nmiss} missing: ${await page.textContent('#dns .card > p')}`,
  );
  const rtext = await page.textContent('#view-routing');
  check(!/\bnull\b|undefined|NaN/.test(rtext), `no stray null/undefined in the Routing view: ${rtext}`);
  await page.screenshot({ path: `${OUT}/dashboard-routing.png`, fullPage: true });

  // ---------------------------------------------------------------- audit
  step('the audit log lists those changes under the token name');
  await go('audit');
  const audit = await page.$$eval('#audit-table tr.entry', (rs) =>
    rs.map((r) => ({
      actor: r.children[1].textContent,
      action: r.children[2].textContent,
      resource: r.children[4].textContent,
    })),
  );
  const mine = audit.filter((e) => e.actor.startsWith('dash2'));
  const acts = mine.map((e) => e.action);
  check(acts.filter((a) => a === 'catchall.set').length >= 2, `two catch-all changes: ${acts}`);
  for (const a of ['address.add', 'address.verify', 'address.remove'])
    check(acts.includes(a), `${a} by dash2: ${JSON.stringify(audit)}`);
  check(
    mine.some((e) => e.action === 'address.add' && e.resource.includes(NEWDEST)),
    `the address entry names ${NEWDEST}: ${JSON.stringify(mine)}`,
  );
  check(
    mine.filter((e) => e.action === 'address.verify').map((e) => e.resource.split(' ')[1]).sort().join() ===
      [NEWDEST, VOUCH].sort().join(),
    `both verifications audited (code and vouch): ${JSON.stringify(mine)}`,
  );
  check(
    acts.some((a) => /^rule\.(disable|enable|edit)$/.test(a)),
    `the rule switch is audited: ${acts}`,
  );
  check(mine.every((e) => e.actor.includes('token')), `the actor type is token: ${JSON.stringify(mine)}`);
  // Newest first: the last change (the rule enabled again) tops the list.
  check(/^rule\./.test(audit[0].action), `newest first: ${JSON.stringify(audit[0])}`);
  // An entry expands to its before/after values.
  const ca = page.locator('#audit-table tr.entry').filter({ hasText: 'catchall.set' }).first();
  await ca.click();
  const after = await ca.locator('xpath=following-sibling::tr[1]').locator('pre').nth(1).textContent();
  check(/drop/.test(after), `the newest catch-all change shows drop after: ${after}`);
  await page.screenshot({ path: `${OUT}/dashboard-audit.png`, fullPage: true });

  await finish(h, { qids, audit: acts });
} catch (err) {
  await failed(h, err, OUT);
}
