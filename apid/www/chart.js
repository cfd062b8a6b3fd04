// A small SVG time-series chart of our own: several lines (or stacked
// areas) over time, with axes, a legend that toggles series, and hover
// values. Data in, DOM out; no dependencies. Text goes in through
// textContent only.

const SVGNS = 'http://www.w3.org/2000/svg';

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

// "Nice" axis steps (1, 2, 5 × 10^n) so the labels are round numbers.
export function niceTicks(max, count = 5) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  // Message counts are whole numbers: no step below 1.
  const step = Math.max(
    1,
    [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw),
  );
  const ticks = [];
  for (let v = 0; v <= max + step / 2; v += step) ticks.push(Math.round(v * 1e9) / 1e9);
  if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

function fullTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

// Labels in the browser's local time; the day is shown when the range is
// longer than a day.
export function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const md = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  if (spanMs <= 36 * 3600e3) return hm;
  if (spanMs <= 8 * 86400e3) return `${md.slice(5)} ${hm}`;
  return md;
}

// Tick times on round local-time boundaries (every 5 min … 7 days), at
// most max of them.
const TICK_STEPS = [
  300,
  900,
  1800,
  3600,
  2 * 3600,
  3 * 3600,
  6 * 3600,
  12 * 3600,
  86400,
  2 * 86400,
  7 * 86400,
];
export function timeTicks(t0, t1, max) {
  const span = (t1 - t0) / 1000;
  const step = (TICK_STEPS.find((s) => span / s <= max) || Math.ceil(span / max / 86400) * 86400) * 1000;
  const off = new Date(t0).getTimezoneOffset() * 60e3;
  const out = [];
  for (let ms = Math.ceil((t0 - off) / step) * step + off; ms <= t1; ms += step) out.push(ms);
  return out;
}

function toMs(ts) {
  if (typeof ts === 'number') return ts < 1e12 ? ts * 1000 : ts;
  return Date.parse(ts);
}

export class TimeChart {
  // series: [{key, label, color, line}]; opts: {height, stacked}
  constructor(container, series, opts = {}) {
    this.container = container;
    this.series = series;
    this.opts = { height: 260, stacked: false, ...opts };
    this.hidden = new Set();
    this.data = [];
    this.root = document.createElement('div');
    this.root.className = 'tchart';
    this.svgWrap = document.createElement('div');
    this.svgWrap.className = 'tchart-plot';
    this.tip = document.createElement('div');
    this.tip.className = 'tchart-tip';
    this.tip.hidden = true;
    this.legend = document.createElement('div');
    this.legend.className = 'tchart-legend';
    this.svgWrap.appendChild(this.tip);
    this.root.append(this.svgWrap, this.legend);
    container.appendChild(this.root);
    this._onResize = () => this.render();
    window.addEventListener('resize', this._onResize);
  }

  destroy() {
    window.removeEventListener('resize', this._onResize);
    this.root.remove();
  }

  // rows: [{ts, <key>: number, ...}] in time order.
  setData(rows) {
    this.data = rows.map((r) => ({ ...r, _ms: toMs(r.ts) }));
    this.render();
  }

  visible() {
    return this.series.filter((s) => !this.hidden.has(s.key));
  }

  // [low, high] drawn for each visible series at a row: when stacked, the
  // series without `line: true` pile up; a `line` series (e.g. a total) is
  // drawn from zero.
  _bands(row) {
    const out = {};
    let acc = 0;
    for (const s of this.visible()) {
      const v = Number(row[s.key]) || 0;
      if (this.opts.stacked && !s.line) {
        out[s.key] = [acc, acc + v];
        acc += v;
      } else {
        out[s.key] = [0, v];
      }
    }
    return out;
  }

  setStacked(on) {
    this.opts.stacked = !!on;
    this.render();
  }

  render() {
    const W = Math.max(320, this.svgWrap.clientWidth || 640);
    const H = this.opts.height;
    const m = { l: 44, r: 12, t: 10, b: 26 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const old = this.svgWrap.querySelector('svg');
    if (old) old.remove();
    const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img' });
    this.svgWrap.insertBefore(svg, this.tip);
    this.svg = svg;
    const rows = this.data;
    const bands = rows.map((r) => this._bands(r));
    let ymax = 0;
    for (const b of bands) for (const [, hi] of Object.values(b)) ymax = Math.max(ymax, hi);
    const yt = niceTicks(Math.max(ymax, 1), 4);
    const ytop = yt[yt.length - 1];
    const t0 = rows.length ? rows[0]._ms : Date.now() - 3600e3;
    const t1 = rows.length > 1 ? rows[rows.length - 1]._ms : t0 + 3600e3;
    const span = Math.max(t1 - t0, 1);
    const x = (ms) => m.l + ((ms - t0) / span) * pw;
    const y = (v) => m.t + ph - (v / ytop) * ph;
    this._geom = { x, y, m, pw, ph, t0, t1 };

    // Axes and grid.
    const axes = el('g', { class: 'axes' }, svg);
    for (const v of yt) {
      el('line', { x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v), class: 'grid' }, axes);
      const t = el('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, axes);
      t.textContent = String(v);
    }
    for (const ms of timeTicks(t0, t1, Math.max(2, Math.floor(pw / 90)))) {
      el('line', { x1: x(ms), x2: x(ms), y1: m.t + ph, y2: m.t + ph + 4, class: 'tick' }, axes);
      // Labels at the plot's ends are anchored inwards so they are not cut.
      const anchor = x(ms) > m.l + pw - 24 ? 'end' : x(ms) < m.l + 24 ? 'start' : 'middle';
      const t = el('text', { x: x(ms), y: H - 8, 'text-anchor': anchor }, axes);
      t.textContent = timeLabel(ms, span);
    }
    el('line', { x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph, class: 'axis' }, axes);
    el('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, class: 'axis' }, axes);

    // Stacked series are areas between their band's edges, drawn first;
    // the lines (the upper edges) on top.
    const vis = this.visible();
    const fmt = (i, v) => `${x(rows[i]._ms).toFixed(1)},${y(v).toFixed(1)}`;
    for (const s of vis) {
      if (!rows.length || !this.opts.stacked || s.line) continue;
      const upper = rows.map((_, i) => fmt(i, bands[i][s.key][1]));
      const lower = rows.map((_, i) => fmt(i, bands[i][s.key][0])).reverse();
      el(
        'polygon',
        {
          points: `${upper.join(' ')} ${lower.join(' ')}`,
          fill: s.color,
          'fill-opacity': 0.3,
          'data-key': s.key,
        },
        svg,
      );
    }
    // A `line` series last, so the stack does not cover it.
    const lines = this.opts.stacked ? [...vis.filter((s) => !s.line), ...vis.filter((s) => s.line)] : vis;
    for (const s of lines) {
      if (!rows.length) break;
      const pts = rows.map((_, i) => fmt(i, bands[i][s.key][1]));
      el(
        'polyline',
        {
          points: pts.join(' '),
          fill: 'none',
          stroke: s.color,
          'stroke-width': 2,
          'data-key': s.key,
          class: 'series',
        },
        svg,
      );
    }
    this.cursor = el('line', { y1: m.t, y2: m.t + ph, class: 'cursor', visibility: 'hidden' }, svg);
    const hit = el('rect', { x: m.l, y: m.t, width: pw, height: ph, fill: 'transparent' }, svg);
    hit.addEventListener('mousemove', (ev) => this._hover(ev));
    hit.addEventListener('mouseleave', () => {
      this.tip.hidden = true;
      this.cursor.setAttribute('visibility', 'hidden');
    });
    this._legend();
  }

  // Index of the bucket nearest to a client x coordinate.
  indexAt(clientX) {
    const rows = this.data;
    if (!rows.length) return -1;
    const box = this.svg.getBoundingClientRect();
    const { m, pw, t0, t1 } = this._geom;
    const ms = t0 + ((clientX - box.left - m.l) / pw) * (t1 - t0);
    let best = 0;
    for (let i = 1; i < rows.length; i++) {
      if (Math.abs(rows[i]._ms - ms) < Math.abs(rows[best]._ms - ms)) best = i;
    }
    return best;
  }

  _hover(ev) {
    const i = this.indexAt(ev.clientX);
    if (i < 0) return;
    const row = this.data[i];
    const { x } = this._geom;
    const cx = x(row._ms);
    this.cursor.setAttribute('x1', cx);
    this.cursor.setAttribute('x2', cx);
    this.cursor.setAttribute('visibility', 'visible');
    this.tip.replaceChildren();
    const head = document.createElement('div');
    head.className = 'tchart-tip-time';
    head.textContent = fullTime(row._ms);
    this.tip.appendChild(head);
    for (const s of this.visible()) {
      const line = document.createElement('div');
      line.dataset.key = s.key;
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = s.color;
      const label = document.createElement('span');
      label.textContent = `${s.label}: `;
      const val = document.createElement('b');
      val.textContent = String(Number(row[s.key]) || 0);
      line.append(sw, label, val);
      this.tip.appendChild(line);
    }
    this.tip.dataset.index = String(i);
    this.tip.hidden = false;
    const W = this.svgWrap.clientWidth;
    const left = cx + 12 + 180 > W ? cx - 12 - 180 : cx + 12;
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${this._geom.m.t}px`;
  }

  _legend() {
    this.legend.replaceChildren();
    for (const s of this.series) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'tchart-key';
      b.dataset.key = s.key;
      b.setAttribute('aria-pressed', String(!this.hidden.has(s.key)));
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = s.color;
      const t = document.createElement('span');
      t.textContent = s.label;
      b.append(sw, t);
      b.addEventListener('click', () => {
        if (this.hidden.has(s.key)) this.hidden.delete(s.key);
        else this.hidden.add(s.key);
        this.render();
      });
      this.legend.appendChild(b);
    }
  }
}
