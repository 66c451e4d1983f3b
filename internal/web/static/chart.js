// A time-series line chart drawn on a <canvas>. Points are kept in
// growing typed arrays; drawing reduces them to one min/max pair per pixel
// column, so a week of readings every 10 s (60,480 points) costs one pass
// and a few hundred line segments.

const pad = (n) => String(n).padStart(2, '0');

export class Chart {
  constructor(canvas) {
    this.canvas = canvas;
    this.t = new Float64Array(1024);
    this.v = new Float64Array(1024);
    this.n = 0;
    this.from = 0;
    this.to = 0;
    this.rel = 0; // > 0: the range is the last rel ms, moving with time
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  // setData replaces the points; ts (ms) must be ascending.
  setData(ts, vs) {
    this.n = 0;
    this.grow(ts.length);
    this.t.set(ts);
    this.v.set(vs);
    this.n = ts.length;
    this.schedule();
  }

  grow(need) {
    if (need <= this.t.length) return;
    let cap = this.t.length;
    while (cap < need) cap *= 2;
    const t = new Float64Array(cap), v = new Float64Array(cap);
    t.set(this.t.subarray(0, this.n));
    v.set(this.v.subarray(0, this.n));
    this.t = t; this.v = v;
  }

  // append adds a point (live readings arrive in order; an older one is
  // inserted in place).
  append(ts, value) {
    this.grow(this.n + 1);
    let i = this.n;
    while (i > 0 && this.t[i - 1] > ts) i--;
    if (i < this.n) {
      this.t.copyWithin(i + 1, i, this.n);
      this.v.copyWithin(i + 1, i, this.n);
    }
    this.t[i] = ts; this.v[i] = value; this.n++;
    this.schedule();
  }

  setRange(from, to) { this.rel = 0; this.from = from; this.to = to; this.schedule(); }

  // setRelative shows the last ms milliseconds, moving with time.
  setRelative(ms) { this.rel = ms; this.schedule(); }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  // lowerBound is the first index with t >= x.
  lowerBound(x) {
    let lo = 0, hi = this.n;
    while (lo < hi) { const m = (lo + hi) >> 1; if (this.t[m] < x) lo = m + 1; else hi = m; }
    return lo;
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const W = c.clientWidth, H = c.clientHeight;
    if (!W || !H) return 0;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) { c.width = Math.round(W * dpr); c.height = Math.round(H * dpr); }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const L = 48, R = 8, T = 8, B = 20, w = W - L - R, h = H - T - B;
    if (this.rel) { this.to = Date.now(); this.from = this.to - this.rel; }
    const from = this.from || (this.n ? this.t[0] : 0), to = this.to || (this.n ? this.t[this.n - 1] : 1);
    const i0 = this.lowerBound(from), i1 = this.lowerBound(to + 1);
    g.font = '11px system-ui'; g.fillStyle = '#6a737d'; g.strokeStyle = '#dde1e6'; g.lineWidth = 1;
    if (i1 <= i0) {
      g.fillText('no readings in this range', L + 8, T + h / 2);
      this.drawn = 0;
      c.dataset.drawn = 0;
      return 0;
    }
    // One pass: min and max per pixel column.
    const cols = Math.max(1, Math.floor(w));
    const mn = new Float64Array(cols).fill(Infinity), mx = new Float64Array(cols).fill(-Infinity);
    const span = Math.max(1, to - from);
    let lo = Infinity, hi = -Infinity;
    for (let i = i0; i < i1; i++) {
      const v = this.v[i];
      if (!Number.isFinite(v)) continue;
      const x = Math.min(cols - 1, Math.floor(((this.t[i] - from) / span) * cols));
      if (v < mn[x]) mn[x] = v;
      if (v > mx[x]) mx[x] = v;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo === hi) { lo -= 1; hi += 1; }
    const y = (v) => T + h - ((v - lo) / (hi - lo)) * h;
    // Grid and labels.
    g.beginPath();
    for (const v of [lo, (lo + hi) / 2, hi]) { g.moveTo(L, Math.round(y(v)) + .5); g.lineTo(L + w, Math.round(y(v)) + .5); }
    g.stroke();
    g.textAlign = 'right';
    for (const v of [lo, (lo + hi) / 2, hi]) g.fillText(String(+v.toPrecision(4)), L - 4, y(v) + 4);
    g.textAlign = 'center';
    for (const f of [0, .5, 1]) {
      const d = new Date(from + f * span);
      const label = span > 36e5 * 36 ? `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:00` : `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
      g.textAlign = f === 0 ? 'left' : f === 1 ? 'right' : 'center';
      g.fillText(label, L + f * w, H - 5);
    }
    // The line through the columns' min and max.
    g.strokeStyle = '#1f6feb'; g.lineWidth = 1.5; g.beginPath();
    let started = false;
    for (let x = 0; x < cols; x++) {
      if (mn[x] === Infinity) continue;
      const px = L + x + .5;
      if (!started) { g.moveTo(px, y(mn[x])); started = true; } else g.lineTo(px, y(mn[x]));
      if (mx[x] !== mn[x]) g.lineTo(px, y(mx[x]));
    }
    g.stroke();
    this.drawn = i1 - i0;
    c.dataset.drawn = this.drawn; // what the browser tests read
    return this.drawn;
  }
}
