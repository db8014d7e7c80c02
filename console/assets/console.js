// MiniAutoML console: browser-side behaviour for the server-rendered pages.
// Each page is recognised by its element ids; on other pages nothing runs.
// All view state lives in the URL query and is written with replaceState.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);

  // Ten series colours of middle lightness, readable on light and dark backgrounds.
  const PALETTE = ['#3b82f6', '#ef4444', '#22c55e', '#f59e0b', '#a855f7',
    '#ec4899', '#14b8a6', '#f97316', '#84cc16', '#94a3b8'];

  const param = (name) => new URLSearchParams(location.search).get(name);

  // Set (or, for null/empty values, delete) query parameters without reloading.
  function setParams(values) {
    const url = new URL(location.href);
    for (const [k, v] of Object.entries(values)) {
      if (v == null || v === '') url.searchParams.delete(k);
      else url.searchParams.set(k, String(v));
    }
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  }

  const cssVar = (name, fallback) =>
    getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

  // Cell text to number; empty or non-finite text is a missing value.
  function num(text) {
    const t = (text || '').trim();
    const v = t === '' ? NaN : Number(t);
    return Number.isFinite(v) ? v : null;
  }

  // fetch, tried again (twice, half a second apart) when the request never got an answer:
  // a browser aborts requests in flight when the machine's network changes. Every request
  // this page sends is a read or a prediction, so sending one again changes nothing.
  async function fetchAgain(url, options) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fetch(url, options);
      } catch (err) {
        if (attempt >= 3 || !(err instanceof TypeError)) throw err;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  }

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  // 1. Login: a token in "#token=..." is submitted once, and the hash is cleared.
  function initLogin(form) {
    const h = location.hash;
    if (!h.startsWith('#token=')) return;
    let token = h.slice('#token='.length);
    try { token = decodeURIComponent(token); } catch (e) { /* keep it raw */ }
    history.replaceState(history.state, '', location.pathname + location.search);
    if (!token) return;
    form.elements.token.value = token;
    // The prototype method still works if a control is named "submit".
    HTMLFormElement.prototype.submit.call(form);
  }

  // 2. Runs table: selection in ?select=, compare link, periodic row refresh.
  function initRuns(table) {
    const tbody = table.tBodies[0], link = $('compare-link'), errorEl = $('refresh-error');
    const selected = () => (param('select') || '').split(',').filter(Boolean);

    // Tick boxes from the URL and bring the compare link up to date.
    function apply() {
      const sel = selected();
      const set = new Set(sel);
      for (const box of table.querySelectorAll('input.select-run')) box.checked = set.has(box.value);
      if (!link) return;
      link.href = '/compare?runs=' + encodeURIComponent(sel.join(','));
      if (sel.length < 2) link.setAttribute('aria-disabled', 'true');
      else link.removeAttribute('aria-disabled');
    }

    // Selected runs that are not on screen (e.g. filtered out) stay selected.
    table.addEventListener('change', (e) => {
      const box = e.target;
      if (!box.matches || !box.matches('input.select-run')) return;
      const sel = selected().filter((k) => k !== box.value);
      if (box.checked) sel.push(box.value);
      setParams({ select: sel.join(',') });
      apply();
    });

    function showError(msg) {
      if (errorEl) { errorEl.textContent = msg; errorEl.hidden = msg == null; }
    }

    let busy = false;
    async function refresh() {
      if (document.hidden || busy) return;
      busy = true;
      try {
        const url = new URL(location.href);
        url.searchParams.set('fragment', 'rows');
        url.hash = '';
        const res = await fetchAgain(url, { credentials: 'same-origin', cache: 'no-store', headers: { accept: 'text/html' } });
        const text = await res.text();
        if (res.status !== 200) {
          showError(text.trim().slice(0, 500) || `Refresh failed: ${res.status} ${res.statusText}`);
          return;
        }
        showError(null);
        // Compare after parsing, so that serialisation differences do not count.
        const scratch = document.createElement('tbody');
        scratch.innerHTML = text;
        if (scratch.innerHTML === tbody.innerHTML) return;
        tbody.replaceChildren(...scratch.childNodes);
        apply();
      } catch (err) {
        showError(`Refresh failed: ${err.message || err}`);
      } finally {
        busy = false;
      }
    }

    apply();
    const secs = Number(table.dataset.refresh);
    if (secs > 0) {
      setInterval(refresh, secs * 1000);
      document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
    }
  }

  // TensorBoard-style exponential moving average with debiasing; nulls pass through.
  function smoothValues(ys, s) {
    if (!(s > 0)) return ys.slice();
    let last = 0, n = 0;
    return ys.map((v) => {
      if (v == null) return null;
      last = last * s + (1 - s) * v;
      n += 1;
      return last / (1 - Math.pow(s, n));
    });
  }

  // Series [{label, color, pts: [[epoch, value|null], ...]}] to uPlot data.
  // In log mode values <= 0 are dropped before smoothing. Later points at a
  // repeated epoch win. Returns {data, points}.
  function toData(series, s, log) {
    const xset = new Set();
    const cols = series.map((sr) => {
      const byEpoch = new Map();
      for (const [x, v] of sr.pts) {
        if (x == null || !Number.isFinite(x)) continue;
        const y = v == null || (log && v <= 0) ? null : v;
        if (y != null || !byEpoch.has(x)) byEpoch.set(x, y);
      }
      const xs = [...byEpoch.keys()].sort((a, b) => a - b);
      const ys = smoothValues(xs.map((x) => byEpoch.get(x)), s);
      xs.forEach((x, i) => { if (ys[i] != null) xset.add(x); });
      return new Map(xs.map((x, i) => [x, ys[i]]));
    });
    const xs = [...xset].sort((a, b) => a - b);
    let points = 0;
    const ys = cols.map((m) => xs.map((x) => {
      const v = m.has(x) ? m.get(x) : null;
      if (v != null) points += 1;
      return v;
    }));
    return { data: [xs, ...ys], points };
  }

  // Shared chart controller for run and compare pages. source(metric) gives the
  // raw series; the controls and URL are handled here. Returns {draw, schedule, addMetric}.
  function curves(name, source) {
    const chartEl = $('chart'), metricSel = $('metric'), scaleSel = $('scale');
    const smoothIn = $('smooth'), smoothOut = $('smooth-value');
    const q = new URLSearchParams(location.search);

    if (smoothIn) smoothIn.value = q.get('smooth') ?? smoothIn.getAttribute('value') ?? '0';
    if (scaleSel && ['linear', 'log'].includes(q.get('scale'))) scaleSel.value = q.get('scale');
    if (metricSel && q.get('metric') && hasOption(q.get('metric'))) metricSel.value = q.get('metric');

    function hasOption(m) { return [...metricSel.options].some((o) => o.value === m); }

    // Add an option for a metric not seen before; select it if the URL asks for it.
    function addMetric(m) {
      if (!metricSel || hasOption(m)) return;
      metricSel.append(el('option', m, { value: m }));
      if (param('metric') === m && metricSel.value !== m) metricSel.value = m;
    }

    function state() {
      const s = Math.min(0.99, Math.max(0, Number(smoothIn ? smoothIn.value : 0) || 0));
      return { metric: metricSel ? metricSel.value : '', smooth: s, log: !!scaleSel && scaleSel.value === 'log' };
    }

    const width = () => Math.max(200, chartEl.clientWidth || chartEl.parentElement.clientWidth || 600);

    function options(st, series) {
      const fg = cssVar('--pico-color', '#888');
      const grid = cssVar('--pico-muted-border-color', 'rgba(128,128,128,.3)');
      const axis = (label) => ({ label, stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } });
      return {
        width: width(), height: 320,
        scales: { x: { time: false }, y: st.log ? { distr: 3, log: 10 } : { distr: 1 } },
        // Epochs are whole numbers: only integer tick steps on x.
        axes: [Object.assign(axis('epoch'), { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }),
          Object.assign(axis(st.metric), { size: 60 })],
        series: [{ label: 'epoch' }].concat(series.map((sr) => ({ label: sr.label, stroke: sr.color, width: 2, spanGaps: true }))),
      };
    }

    let u = null, shape = '', theme = 0, updated = 0, pending = false;

    // Redraw now; the plot is rebuilt only when series, metric, scale or theme change.
    function draw() {
      const st = state();
      if (smoothOut) smoothOut.textContent = st.smooth.toFixed(2);
      const series = source(st.metric);
      const { data, points } = toData(series, st.smooth, st.log);
      const key = JSON.stringify([st.metric, st.log, theme, series.map((sr) => [sr.label, sr.color])]);
      if (!u || key !== shape) {
        if (u) u.destroy();
        u = new uPlot(options(st, series), data, chartEl);
        shape = key;
        window.miniautoml = window.miniautoml || {};
        window.miniautoml.charts = { [name]: u };
      } else {
        u.setData(data);
      }
      chartEl.dataset.points = String(points);
      chartEl.dataset.metric = st.metric;
      chartEl.dataset.updated = String(++updated);
    }

    // At most one redraw per animation frame.
    function schedule() {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; draw(); });
    }

    function onControl() {
      const st = state();
      setParams({ metric: st.metric, smooth: st.smooth, scale: st.log ? 'log' : 'linear' });
      schedule();
    }
    if (metricSel) metricSel.addEventListener('change', onControl);
    if (scaleSel) scaleSel.addEventListener('change', onControl);
    if (smoothIn) smoothIn.addEventListener('input', onControl);

    let resizing = false;
    window.addEventListener('resize', () => {
      if (resizing) return;
      resizing = true;
      requestAnimationFrame(() => { resizing = false; if (u) u.setSize({ width: width(), height: 320 }); });
    });
    // Axis colours come from Pico's variables, so rebuild when the theme flips.
    if (window.matchMedia) {
      window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { theme += 1; schedule(); });
    }

    return { draw, schedule, addMetric };
  }

  // 3. Run page: chart from #epoch-data, kept current from the event stream.
  function initRun(section) {
    const table = $('epoch-data'), headRow = table.tHead.rows[0], tbody = table.tBodies[0];
    // Metric columns in table order, from the header after id, rank, epoch.
    const columns = [...headRow.cells].slice(3).map((th) => th.textContent.trim());
    const rows = new Map(); // id -> {tr, rank, epoch, m: {metric: value}}

    function record(tr) {
      const m = {};
      for (const td of tr.querySelectorAll('td[data-metric]')) m[td.dataset.metric] = num(td.textContent);
      rows.set(tr.dataset.id, { tr, rank: Number(tr.dataset.rank), epoch: Number(tr.dataset.epoch), m });
    }
    for (const tr of tbody.rows) record(tr);

    function source(metric) {
      const byRank = new Map();
      for (const r of rows.values()) {
        if (r.m[metric] == null || !Number.isFinite(r.rank)) continue;
        if (!byRank.has(r.rank)) byRank.set(r.rank, []);
        byRank.get(r.rank).push([r.epoch, r.m[metric]]);
      }
      return [...byRank.keys()].sort((a, b) => a - b).map((rank) => ({
        label: `rank ${rank}`, color: PALETTE[rank % PALETTE.length], pts: byRank.get(rank),
      }));
    }

    const chart = curves('curves', source);

    // A new metric gets a header cell, an empty cell in every row and an option.
    function addColumn(name) {
      columns.push(name);
      headRow.append(el('th', name));
      for (const r of rows.values()) r.tr.append(el('td', '', { 'data-metric': name }));
      chart.addMetric(name);
    }

    // Insert or replace the row for one epoch event, in the server's shape.
    function upsert(ev) {
      if (!ev || ev.id == null) return;
      const id = String(ev.id);
      const metrics = ev.metrics || {};
      for (const name of Object.keys(metrics)) if (!columns.includes(name)) addColumn(name);
      const tr = el('tr', null, { 'data-id': id, 'data-rank': String(ev.rank), 'data-epoch': String(ev.epoch) });
      tr.append(el('td', id), el('td', String(ev.rank)), el('td', String(ev.epoch)));
      for (const name of columns) {
        const v = metrics[name];
        tr.append(el('td', typeof v === 'number' && Number.isFinite(v) ? String(v) : '', { 'data-metric': name }));
      }
      if (rows.has(id)) rows.get(id).tr.replaceWith(tr); else tbody.append(tr);
      record(tr);
      chart.schedule();
    }

    function live(data) {
      let st;
      try { st = JSON.parse(data); } catch (e) { return; }
      const phase = $('live-phase'), progress = $('live-progress');
      if (phase && st.phase != null) {
        phase.textContent = String(st.phase);
        for (const c of [...phase.classList]) if (c.startsWith('phase-')) phase.classList.remove(c);
        phase.classList.add(`phase-${st.phase}`);
      }
      if (progress && st.progress != null) progress.textContent = String(st.progress);
    }

    chart.draw();

    if (section.dataset.ended === 'true' || !section.dataset.events || !window.EventSource) return;
    // EventSource reconnects by itself and sends Last-Event-ID; rows dedupe by id.
    const es = new EventSource(section.dataset.events);
    es.addEventListener('epoch', (e) => {
      let ev = null;
      try { ev = JSON.parse(e.data); } catch (err) { /* skip a malformed event */ }
      upsert(ev);
    });
    es.addEventListener('status', (e) => live(e.data));
    es.addEventListener('end', (e) => {
      live(e.data);
      es.close();
      section.dataset.ended = 'true';
    });
  }

  // 4. Compare page: rank 0 of each run overlaid, fetched once.
  async function initCompare(section) {
    let runs = [];
    try { runs = JSON.parse(section.dataset.runs || '[]'); } catch (e) { runs = []; }
    const results = await Promise.all(runs.map(async (run) => {
      try {
        const res = await fetchAgain(run.epochs, { credentials: 'same-origin', headers: { accept: 'application/json' } });
        if (res.status !== 200) throw new Error(`${res.status} ${res.statusText}`.trim());
        const body = await res.json();
        return { run, epochs: Array.isArray(body.epochs) ? body.epochs : [] };
      } catch (err) {
        return { run, epochs: [], error: err.message || String(err) };
      }
    }));

    // A run that could not be fetched is reported above the chart and left out.
    for (const r of results) {
      if (r.error) $('chart').before(el('p', `${r.run.key}: ${r.error}`, { class: 'chart-error', role: 'alert' }));
    }

    const source = (metric) => results.filter((r) => !r.error).map((r) => ({
      label: r.run.key,
      color: PALETTE[results.indexOf(r) % PALETTE.length],
      pts: r.epochs.filter((e) => Number(e.rank) === 0 && e.metrics && metric in e.metrics)
        .map((e) => [Number(e.epoch), typeof e.metrics[metric] === 'number' ? e.metrics[metric] : null]),
    }));
    const chart = curves('compare', source);

    const names = new Set();
    for (const r of results) for (const e of r.epochs) for (const k of Object.keys(e.metrics || {})) names.add(k);
    for (const k of [...names].sort()) chart.addMetric(k);
    chart.draw();
  }

  // 5. Deployment page: send text to the predict endpoint and show the answer.
  function initTryIt(form) {
    const out = $('prediction');
    const button = form.querySelector('button:not([type="button"]):not([type="reset"]), input[type="submit"]');
    let busy = false;

    function setBusy(on) {
      busy = on;
      if (!button) return;
      button.disabled = on;
      if (on) button.setAttribute('aria-busy', 'true'); else button.removeAttribute('aria-busy');
    }

    const showError = (msg) => out.replaceChildren(el('p', msg, { id: 'prediction-error', role: 'alert' }));

    function showPrediction(body) {
      const p = el('p', 'Label: ');
      p.append(el('strong', String(body.label ?? ''), { id: 'predicted-label' }));
      const parts = [p];
      const scores = Object.entries(body.scores || {})
        .filter(([, v]) => typeof v === 'number' && Number.isFinite(v))
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
      if (scores.length) {
        const table = el('table', null, { id: 'scores' });
        const tb = table.createTBody();
        for (const [label, v] of scores) {
          const tr = el('tr', null, { 'data-label': label });
          const td = el('td');
          td.append(el('progress', null, { max: '1', value: String(Math.min(1, Math.max(0, v))) }));
          tr.append(el('td', label), el('td', v.toFixed(3)), td);
          tb.append(tr);
        }
        parts.push(table);
      }
      out.replaceChildren(...parts);
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (busy) return;
      setBusy(true);
      try {
        const res = await fetchAgain(form.dataset.action, {
          method: 'POST', credentials: 'same-origin',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify({ text: form.elements.text.value }),
        });
        let body = null;
        try { body = JSON.parse(await res.text()); } catch (err) { body = null; }
        if (res.status === 200 && body && typeof body === 'object') showPrediction(body);
        else if (body && typeof body.error === 'string') showError(body.error);
        else showError(`${res.status} ${res.statusText || 'unexpected response'}`.trim());
      } catch (err) {
        showError(`Request failed: ${err.message || err}`);
      } finally {
        setBusy(false);
      }
    });
  }

  // Each page is recognised by the elements it has.
  function init() {
    const chart = window.uPlot && $('chart');
    if ($('login') instanceof HTMLFormElement) initLogin($('login'));
    if ($('runs') instanceof HTMLTableElement && $('runs').tBodies.length) initRuns($('runs'));
    if ($('run-curves') && chart && $('epoch-data')) initRun($('run-curves'));
    if ($('compare-curves') && chart) initCompare($('compare-curves'));
    if ($('try-it') instanceof HTMLFormElement && $('prediction')) initTryIt($('try-it'));
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
