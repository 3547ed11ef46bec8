// The graph page (`/graph`): panels of an expression editor, a table and a graph tab, and a
// live switch that turns the panel into a websocket subscription. The panels' state lives in
// the URL as Prometheus writes it (`g0.expr`, `g0.tab`, `g0.range_input`, …), so alert
// `generatorURL`s and bookmarks open the same panels.
import uPlot from 'uplot';
import { EditorView, keymap, placeholder } from '@codemirror/view';
import { EditorState } from '@codemirror/state';
import { defaultKeymap, history, historyKeymap } from '@codemirror/commands';
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from '@codemirror/language';
import { acceptCompletion, autocompletion, closeBrackets, closeCompletion } from '@codemirror/autocomplete';
import { PromQLExtension } from '@prometheus-io/codemirror-promql';
import { api, el, formatDuration, parseDuration, seriesName, svg } from './dom.js';

/** The most points a graph asks for per series (Prometheus's UI's resolution). */
const POINTS = 250;

/** The ranges the − and + buttons step through, in seconds (Prometheus's UI's). */
const RANGES = [1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800, 1209600,
  2419200, 4838400, 31536000, 63072000];

/** The next preset range above (`dir` 1) or below (`dir` -1) `range`, or `range` at the ends. */
function stepRange(range, dir) {
  const next = dir > 0 ? RANGES.find((r) => r > range) : [...RANGES].reverse().find((r) => r < range);
  return next || range;
}

/** Reads the panels from the URL's `gN.*` parameters (one empty panel when there is none). */
function panelsFromUrl() {
  const params = new URLSearchParams(window.location.search);
  const panels = [];
  for (let i = 0; params.has(`g${i}.expr`) || params.has(`g${i}.tab`); i++) {
    const get = (key) => params.get(`g${i}.${key}`);
    panels.push({
      expr: get('expr') || '',
      tab: get('tab') === '1' ? 'table' : 'graph',
      range: parseDuration(get('range_input') || '1h') || 3600,
      end: get('end_input') ? Date.parse(get('end_input')) / 1000 || null : null,
      step: get('step_input') ? Number(get('step_input')) || null : null,
      stacked: get('stacked') === '1',
      live: get('live') === '1',
    });
  }
  return panels.length ? panels : [newPanel()];
}

function newPanel() {
  return { expr: '', tab: 'table', range: 3600, end: null, step: null, stacked: false, live: false };
}

/** Writes the panels back to the URL (replacing the history entry: no entry per keystroke). */
function panelsToUrl(panels) {
  const params = new URLSearchParams();
  panels.forEach((p, i) => {
    params.set(`g${i}.expr`, p.expr);
    params.set(`g${i}.tab`, p.tab === 'table' ? '1' : '0');
    params.set(`g${i}.range_input`, formatDuration(p.range));
    if (p.end) params.set(`g${i}.end_input`, new Date(p.end * 1000).toISOString());
    if (p.step) params.set(`g${i}.step_input`, String(p.step));
    if (p.stacked) params.set(`g${i}.stacked`, '1');
    if (p.live) params.set(`g${i}.live`, '1');
  });
  window.history.replaceState(null, '', `${window.location.pathname}?${params}`);
}

export function graphPage(main, prefix) {
  const panels = panelsFromUrl();
  const list = el('div', { class: 'panels' });
  const save = () => panelsToUrl(panels);
  const add = (state) => list.append(panelView(prefix, state, save, () => {
    panels.splice(panels.indexOf(state), 1);
    save();
  }));
  panels.forEach(add);
  const addButton = el('button', {
    class: 'add',
    onclick: () => {
      const state = newPanel();
      panels.push(state);
      add(state);
      save();
    },
  }, 'Add panel');
  main.append(list, addButton);
}

/** One panel: editor, controls, and the table or graph of its expression. */
function panelView(prefix, state, save, remove) {
  const errors = el('div', { class: 'messages' });
  const stats = el('div', { class: 'stats', role: 'status' });
  const body = el('div', { class: 'body' });
  let live = null;
  let chart = null;

  const editor = new EditorView({
    parent: el('div', {}),
    state: EditorState.create({
      doc: state.expr,
      extensions: [
        history(),
        bracketMatching(),
        closeBrackets(),
        // nothing chosen until ↓/↑: Enter executes what was typed, and accepts a completion
        // only once one is chosen (Tab accepts it too; without one, Tab moves the focus on)
        autocompletion({ selectOnOpen: false }),
        syntaxHighlighting(defaultHighlightStyle),
        placeholder('Expression (press Enter to execute, Shift+Enter for a new line)'),
        new PromQLExtension().setComplete({ remote: { url: window.location.origin + prefix } }).asExtension(),
        keymap.of([
          { key: 'Enter', run: (view) => { closeCompletion(view); execute(); return true; } },
          { key: 'Tab', run: acceptCompletion },
          ...defaultKeymap,
          ...historyKeymap,
        ]),
        // the view manages its element's classes: ours goes through its attributes
        EditorView.editorAttributes.of({ class: 'editor' }),
        EditorView.contentAttributes.of({ 'aria-label': 'Expression' }),
        EditorView.updateListener.of((u) => {
          if (u.docChanged) {
            state.expr = u.state.doc.toString();
            save();
          }
        }),
      ],
    }),
  });

  const tabButton = (name, label) => el('button', {
    role: 'tab',
    class: `tab ${name}`,
    'aria-selected': String(state.tab === name),
    onclick: () => {
      state.tab = name;
      save();
      syncTabs();
      execute();
    },
  }, label);
  // ← and → move between the tabs, as in any tab list
  const tabs = el('div', {
    role: 'tablist',
    class: 'tabs',
    onkeydown: (e) => {
      if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
      const other = tabs.querySelector(`button.${state.tab === 'table' ? 'graph' : 'table'}`);
      other.focus();
      other.click();
    },
  }, tabButton('table', 'Table'), tabButton('graph', 'Graph'));
  const syncTabs = () => tabs.querySelectorAll('button').forEach((b) => {
    b.setAttribute('aria-selected', String(b.classList.contains(state.tab)));
  });

  const rangeInput = el('input', {
    class: 'range', 'aria-label': 'Range', size: 6, value: formatDuration(state.range),
    onchange: (e) => {
      const seconds = parseDuration(e.target.value);
      if (seconds) state.range = seconds;
      setRange(state.range);
    },
  });
  const setRange = (seconds) => {
    state.range = seconds;
    rangeInput.value = formatDuration(state.range);
    save();
    execute();
  };
  const endInput = el('input', {
    class: 'end', 'aria-label': 'End time', type: 'datetime-local', step: 1,
    onchange: (e) => setEnd(e.target.value ? Date.parse(`${e.target.value}Z`) / 1000 : null),
  });
  // the end time in UTC, as the URL and Prometheus's UI keep it; empty for "now"
  const setEnd = (seconds) => {
    state.end = seconds;
    endInput.value = state.end ? new Date(state.end * 1000).toISOString().slice(0, 19) : '';
    save();
    execute();
  };
  endInput.value = state.end ? new Date(state.end * 1000).toISOString().slice(0, 19) : '';
  // « and » move the end by half the range, as in Prometheus's UI
  const shiftEnd = (dir) => setEnd((state.end || Math.floor(Date.now() / 1000)) + (dir * state.range) / 2);
  const button = (cls, label, title, onclick) => el('button', { class: cls, title, 'aria-label': title, onclick }, label);
  const stepInput = el('input', {
    class: 'step', 'aria-label': 'Resolution (seconds)', size: 6, placeholder: 'step (s)',
    value: state.step || '',
    onchange: (e) => {
      state.step = Number(e.target.value) > 0 ? Number(e.target.value) : null;
      save();
      execute();
    },
  });
  const stacked = el('input', {
    type: 'checkbox', class: 'stacked', checked: state.stacked,
    onchange: (e) => { state.stacked = e.target.checked; save(); execute(); },
  });
  const liveSwitch = el('input', {
    type: 'checkbox', class: 'live', checked: state.live,
    onchange: (e) => { state.live = e.target.checked; save(); execute(); },
  });
  const controls = el('div', { class: 'controls' },
    el('span', { class: 'group' },
      button('range-down', '−', 'Shorter range', () => setRange(stepRange(state.range, -1))),
      el('label', {}, 'Range ', rangeInput),
      button('range-up', '+', 'Longer range', () => setRange(stepRange(state.range, 1)))),
    el('span', { class: 'group' },
      button('end-back', '«', 'Earlier end (by half the range)', () => shiftEnd(-1)),
      el('label', {}, 'End ', endInput),
      button('end-forward', '»', 'Later end (by half the range)', () => shiftEnd(1)),
      button('end-now', 'now', 'End now', () => setEnd(null))),
    el('label', {}, 'Step ', stepInput),
    el('label', {}, stacked, ' Stacked'),
    el('label', { title: 'Follow the result as samples arrive (a websocket subscription)' }, liveSwitch, ' Live'),
  );

  const panel = el('section', { class: 'panel' },
    el('div', { class: 'expression' },
      editor.dom,
      el('button', { class: 'execute', onclick: () => execute() }, 'Execute'),
      el('button', { class: 'remove', title: 'Remove panel', 'aria-label': 'Remove panel', onclick: () => {
        stop();
        panel.remove();
        remove();
      } }, '×')),
    tabs, controls, stats, errors, body);

  function stop() {
    if (live) live.close();
    live = null;
    if (chart) chart.destroy();
    chart = null;
  }

  function show(kind, texts) {
    for (const text of texts) errors.append(el('div', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text));
  }

  // what Prometheus's UI says under a result: how long it took, at what step, how many series
  const showStats = (started, data, step) => {
    const count = Array.isArray(data.result) && (data.resultType === 'vector' || data.resultType === 'matrix')
      ? data.result.length : 1;
    stats.textContent = [
      `Load time: ${Math.round(performance.now() - started)}ms`,
      step ? `Resolution: ${formatDuration(step)}` : null,
      `Result series: ${count}`,
    ].filter(Boolean).join('   ');
  };

  async function execute() {
    stop();
    errors.replaceChildren();
    body.replaceChildren();
    stats.textContent = '';
    const expr = state.expr.trim();
    if (!expr) return;
    const end = state.end || Date.now() / 1000;
    const started = performance.now();
    try {
      if (state.live) {
        // the graph starts from the range's history, then follows the changes
        const seed = state.tab === 'graph'
          ? (await api(prefix, 'query_range', { query: expr, start: end - state.range, end, step: graphStep(state) })).data.result
          : [];
        live = subscribe(prefix, state, expr, body, show, seed);
      } else if (state.tab === 'table') {
        const { data, warnings, infos } = await api(prefix, 'query', { query: expr, time: end });
        showStats(started, data, null);
        show('warning', warnings);
        show('info', infos);
        body.append(table(data));
      } else {
        const step = graphStep(state);
        const { data, warnings, infos } = await api(prefix, 'query_range', {
          query: expr, start: end - state.range, end, step,
        });
        showStats(started, data, step);
        show('warning', warnings);
        show('info', infos);
        chart = graph(body, data.result.map(countsOfHistograms), state.stacked, [end - state.range, end]);
        body.append(...heatmaps(data.result, [end - state.range, end]));
      }
    } catch (e) {
      show('error', [e.message]);
    }
  }

  syncTabs();
  if (state.expr) execute();
  return panel;
}

/**
 * A range result's series as the chart draws it: a series of native histograms is drawn as
 * its count of observations over time (the table tab shows the buckets).
 */
function countsOfHistograms(s) {
  if (!s.histograms) return s;
  const counts = s.histograms.map(([t, h]) => [t, h.count]);
  const values = [...(s.values || []), ...counts].sort((a, b) => a[0] - b[0]);
  return { metric: s.metric, values };
}

/** The most series of native histograms a graph draws as heatmaps. */
const HEATMAPS = 6;

/** Size of a heatmap, in SVG units (it scales with the panel's width). */
const HEATMAP = { width: 1000, rowHeight: 14, maxHeight: 420, label: 90 };

/**
 * The heatmaps of a range result's native histograms, one per series (the first `HEATMAPS`):
 * time across, a row per bucket (the lowest at the bottom), each cell as dark as its count
 * against the fullest cell of that heatmap; hovering a cell names its bucket, time and count.
 */
function heatmaps(result, span) {
  const series = result.filter((s) => s.histograms && s.histograms.length);
  const maps = series.slice(0, HEATMAPS).map((s) => el('figure', { class: 'heatmap' },
    el('figcaption', {}, seriesName(s.metric)),
    heatmap(s.histograms, span)));
  if (series.length > HEATMAPS) {
    maps.push(el('p', { class: 'note' }, `Heatmaps of the first ${HEATMAPS} of ${series.length} series of histograms.`));
  }
  return maps;
}

/** One series' histograms (`[[t, {count, sum, buckets}], …]`) over the time span `[start, end]` as a heatmap. */
function heatmap(points, [start, end]) {
  // every bucket any point has, by lower then upper bound
  const rows = new Map();
  for (const [, h] of points) {
    for (const b of h.buckets || []) rows.set(`${b[0]}|${b[1]}|${b[2]}`, b);
  }
  const buckets = [...rows.values()].sort((a, b) => Number(a[1]) - Number(b[1]) || Number(a[2]) - Number(b[2]));
  const row = new Map(buckets.map((b, i) => [`${b[0]}|${b[1]}|${b[2]}`, i]));
  const height = Math.min(HEATMAP.maxHeight, Math.max(buckets.length, 1) * HEATMAP.rowHeight);
  const rowHeight = height / Math.max(buckets.length, 1);
  const plot = HEATMAP.width - HEATMAP.label;
  // a cell spans from its point to the next (the last as wide as the one before it)
  const x = (t) => HEATMAP.label + ((t - start) / Math.max(end - start, 1e-9)) * plot;
  const max = Math.max(0, ...points.flatMap(([, h]) => (h.buckets || []).map((b) => Number(b[3]))));
  const cells = [];
  points.forEach(([t, h], i) => {
    const next = i + 1 < points.length ? points[i + 1][0] : t + (i > 0 ? t - points[i - 1][0] : (end - start) / POINTS);
    const left = Math.max(x(t), HEATMAP.label);
    const width = Math.max(Math.min(x(next), HEATMAP.width) - left, 0.5);
    for (const b of h.buckets || []) {
      const count = Number(b[3]);
      if (!(count > 0)) continue;
      const r = row.get(`${b[0]}|${b[1]}|${b[2]}`);
      cells.push(svg('rect', {
        class: 'cell',
        x: left,
        y: height - (r + 1) * rowHeight,
        width,
        height: rowHeight,
        'fill-opacity': (0.1 + 0.9 * (count / max)).toFixed(3),
      }, svg('title', {}, `${bucketRange(b)} @${new Date(t * 1000).toISOString()}: ${b[3]}`)));
    }
  });
  // the upper bounds of some rows, at most one per 14 units
  const every = Math.max(1, Math.ceil(HEATMAP.rowHeight / rowHeight));
  const labels = buckets.map((b, i) => (i % every === 0
    ? svg('text', { x: HEATMAP.label - 4, y: height - i * rowHeight - 2, 'text-anchor': 'end' }, b[2])
    : null));
  return svg('svg', {
    class: 'heatmap',
    viewBox: `0 0 ${HEATMAP.width} ${height}`,
    role: 'img',
    'aria-label': `${buckets.length} buckets over ${points.length} points`,
  }, labels, cells);
}

/** A graph's step: the panel's, or the range over `POINTS`. */
function graphStep(state) {
  return state.step || Math.max(Math.floor(state.range / POINTS), 1);
}

/** A bucket's range as the API's boundary rule (0: `(a,b]`, 1: `[a,b)`, 2: `(a,b)`, 3: `[a,b]`) says. */
function bucketRange([rule, lower, upper]) {
  return `${rule === 1 || rule === 3 ? '[' : '('}${lower}, ${upper}${rule === 0 || rule === 3 ? ']' : ')'}`;
}

/** Size of a histogram's bucket chart, in SVG units (it scales with the cell). */
const BUCKET_CHART = { width: 320, height: 80 };

/**
 * A native histogram's buckets as bars side by side, lowest bound first, each as tall as its
 * count against the fullest bucket (the bars are of equal width: exponential buckets grow
 * with their bounds, so a linear axis would squeeze the low ones); hovering a bar names its
 * range and count.
 */
function bucketChart(buckets) {
  const max = Math.max(...buckets.map((b) => Number(b[3])), 0);
  const width = BUCKET_CHART.width / Math.max(buckets.length, 1);
  const bars = buckets.map((b, i) => {
    const height = max > 0 ? (Number(b[3]) / max) * (BUCKET_CHART.height - 2) : 0;
    return svg('rect', {
      x: i * width + 1,
      y: BUCKET_CHART.height - height,
      width: Math.max(width - 2, 1),
      height,
    }, svg('title', {}, `${bucketRange(b)}: ${b[3]}`));
  });
  return svg('svg', {
    class: 'bucket-chart',
    viewBox: `0 0 ${BUCKET_CHART.width} ${BUCKET_CHART.height}`,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': `${buckets.length} buckets`,
  }, bars);
}

/** A native histogram as a table cell: its count and sum, a chart of its buckets, then each bucket with its count. */
function histogramCell(h) {
  const buckets = h.buckets || [];
  return el('div', { class: 'histogram' },
    el('div', {}, `count: ${h.count}   sum: ${h.sum}`),
    buckets.length ? bucketChart(buckets) : null,
    el('table', { class: 'buckets' },
      el('tbody', {}, buckets.map((b) => el('tr', {}, el('td', {}, bucketRange(b)), el('td', {}, b[3]))))));
}

/** The table of an instant query's result. */
function table(data) {
  const rows = [];
  switch (data.resultType) {
    case 'vector':
      for (const s of data.result) {
        rows.push([seriesName(s.metric), s.histogram ? histogramCell(s.histogram[1]) : s.value[1]]);
      }
      break;
    case 'matrix':
      for (const s of data.result) {
        const floats = (s.values || []).map(([t, v]) => `${v} @${t}`);
        const hists = (s.histograms || []).map(([t, h]) => `count ${h.count}, sum ${h.sum} @${t}`);
        rows.push([seriesName(s.metric), [...floats, ...hists].join('\n')]);
      }
      break;
    case 'scalar':
      rows.push(['scalar', data.result[1]]);
      break;
    default:
      rows.push(['string', data.result[1]]);
  }
  if (!rows.length) return el('p', { class: 'empty' }, 'Empty query result');
  return el('table', { class: 'result' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Series'), el('th', {}, 'Value'))),
    el('tbody', {}, rows.map(([name, value]) => el('tr', {}, el('td', { class: 'series' }, name), el('td', { class: 'value' }, value)))));
}

/** The first series' colours; `color` gives the later ones colours of their own. */
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/**
 * Series `i`'s colour as `#rrggbb`: the palette, then hues a golden angle apart in three
 * lightnesses, so that no two series of a graph share a colour.
 */
function color(i) {
  if (i < PALETTE.length) return PALETTE[i];
  const hue = (i * 137.508) % 360;
  const light = [0.42, 0.3, 0.55][i % 3];
  const a = 0.65 * Math.min(light, 1 - light);
  const channel = (n) => {
    const k = (n + hue / 30) % 12;
    const v = light - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255).toString(16).padStart(2, '0');
  };
  return `#${channel(0)}${channel(8)}${channel(4)}`;
}

/**
 * Draws series (`[{metric, values: [[t, "v"], …]}]`) as a uPlot chart in `parent`, over the
 * time span `[start, end]` (seconds) whatever part of it has samples. Hovering shows the
 * nearest series' name, value and time, as Prometheus's graph does.
 */
function graph(parent, series, stackedMode, [start, end]) {
  const times = [...new Set(series.flatMap((s) => s.values.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  // the values as answered (what the hover shows), and as drawn (stacked: running sums)
  const answered = series.map((s) => {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s.values) column[index.get(t)] = v;
    return column;
  });
  const columns = answered.map((column) => column.map((v) => (v === null ? null : Number(v))));
  if (stackedMode) {
    for (let i = 1; i < columns.length; i++) {
      columns[i] = columns[i].map((v, j) => (v === null ? null : v + (columns[i - 1][j] || 0)));
    }
  }
  const names = series.map((s) => seriesName(s.metric));
  const holder = el('div', { class: 'chart' });
  const legend = el('ul', { class: 'legend' },
    series.map((s, i) => el('li', {}, el('span', { class: 'swatch', style: `background:${color(i)}` }), names[i])));
  parent.append(holder, legend);
  if (!series.length) {
    parent.append(el('p', { class: 'empty' }, 'Empty query result'));
  }
  const hover = el('div', { class: 'hover', role: 'tooltip', hidden: true });
  // the series nearest the cursor at its time, and its value there
  const showHover = (u) => {
    const { idx, left, top } = u.cursor;
    let nearest = -1;
    let distance = Infinity;
    if (idx !== null && idx !== undefined && left >= 0) {
      columns.forEach((column, i) => {
        if (column[idx] === null) return;
        const d = Math.abs(u.valToPos(column[idx], 'y') - top);
        if (d < distance) [nearest, distance] = [i, d];
      });
    }
    if (nearest < 0) {
      hover.hidden = true;
      return;
    }
    hover.replaceChildren(
      el('div', { class: 'time' }, new Date(times[idx] * 1000).toISOString().replace('T', ' ').replace('.000Z', 'Z')),
      el('div', { class: 'series' }, el('span', { class: 'swatch', style: `background:${color(nearest)}` }), names[nearest]),
      el('div', { class: 'value' }, `value: ${answered[nearest][idx]}`));
    hover.hidden = false;
    const x = u.over.offsetLeft + left + 12;
    const room = u.over.offsetLeft + u.over.clientWidth - hover.offsetWidth;
    hover.style.left = `${Math.max(0, x > room ? x - hover.offsetWidth - 24 : x)}px`;
    hover.style.top = `${u.over.offsetTop + top + 12}px`;
  };
  const width = () => Math.max(parent.clientWidth || 800, 300);
  const chart = new uPlot({
    width: width(),
    height: 320,
    legend: { show: false },
    series: [{}, ...series.map((s, i) => ({
      label: names[i],
      stroke: color(i),
      fill: stackedMode ? `${color(i)}33` : undefined,
      // a 1 px line: Chromium's software rasterizer (no GPU: VMs, remote desktops, headless)
      // draws 50 series of 250 points in ~17 ms at width 1 and ~190 ms at 1.25–2
      // (benches/ui.rs, docs/ui.md)
      width: 1,
      spanGaps: false,
    }))],
    scales: { x: { time: true, range: () => [start, end] } },
    // x labels ("12:05am") need ~60 px: uPlot's default 50 px spacing overlaps them below ~1000 px
    axes: [{ space: 80 }, { size: 70 }],
    hooks: { setCursor: [showHover] },
  }, [times, ...columns], holder);
  holder.append(hover);
  // follows the page's width (a window resized, a panel wrapped)
  const resized = new ResizeObserver(() => {
    if (width() !== chart.width) chart.setSize({ width: width(), height: 320 });
  });
  resized.observe(parent);
  const destroy = chart.destroy.bind(chart);
  chart.destroy = () => { resized.disconnect(); destroy(); };
  return chart;
}

/**
 * Subscribes to `expr` over the websocket and keeps the table or graph current: the
 * snapshot, then every change. The graph scrolls: it keeps the panel's range of points.
 */
function subscribe(prefix, state, expr, body, show, seed) {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${window.location.host}${prefix}/api/v1/subscribe`);
  const current = new Map(); // series name -> {metric, value}
  const history = new Map(); // series name -> {metric, values: [[t, "v"], …]}
  for (const s of seed) history.set(seriesName(s.metric), { metric: s.metric, values: [...s.values] });
  let chart = null;
  const status = el('div', { class: 'live-status', role: 'status' }, 'connecting…');
  const view = el('div', {});
  body.append(status, view);
  const record = (s, t) => {
    const key = seriesName(s.metric);
    current.set(key, s);
    const h = history.get(key) || { metric: s.metric, values: [] };
    h.values.push([t, s.value[1]]);
    while (h.values.length && h.values[0][0] < t - state.range) h.values.shift();
    history.set(key, h);
  };
  const render = () => {
    if (chart) chart.destroy();
    chart = null;
    view.replaceChildren();
    if (state.tab === 'table') {
      view.append(table({ resultType: 'vector', result: [...current.values()] }));
    } else {
      const now = Date.now() / 1000;
      chart = graph(view, [...history.values()], state.stacked, [now - state.range, now]);
    }
  };
  socket.onopen = () => {
    status.textContent = 'live';
    socket.send(JSON.stringify({ id: 'panel', lang: 'promql', query: expr }));
  };
  socket.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === 'error') {
      show('error', [m.error]);
    } else if (m.type === 'snapshot') {
      current.clear();
      for (const s of m.result) record(s, m.time);
      render();
    } else if (m.type === 'change') {
      for (const s of [...m.added, ...m.changed]) record(s, m.time);
      for (const s of m.removed) current.delete(seriesName(s.metric));
      render();
    }
    status.textContent = `live, last change ${new Date((m.time || Date.now() / 1000) * 1000).toLocaleTimeString()}`;
  };
  socket.onclose = () => { status.textContent = 'disconnected'; };
  return { close: () => { socket.close(); if (chart) chart.destroy(); } };
}
