// The status pages: `/status` (build and runtime information, the head's statistics and its
// highest-cardinality metrics and labels, the flags and the configuration), and each part on
// its own at Prometheus 3's paths: `/tsdb-status`, `/flags`, `/config`, and
// `/service-discovery` (every target's labels before and after relabelling).
import { api, el, seriesName } from './dom.js';

function keyValues(title, pairs) {
  return el('section', { class: 'pool' }, el('h2', {}, title),
    el('table', { class: 'kv' }, el('tbody', {}, pairs.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, String(v)))))));
}

/** A ranking's table; each name links to the graph page's table of `expr(name)`. */
function ranking(title, entries, expr) {
  const link = (name) => el('a', { href: `graph?${new URLSearchParams({ 'g0.expr': expr(name), 'g0.tab': '1' })}` }, name);
  return el('section', { class: 'pool' }, el('h2', {}, title),
    el('table', { class: 'ranking' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'Count'))),
      el('tbody', {}, (entries || []).map((e) => el('tr', {}, el('td', {}, link(e.name)), el('td', { class: 'value' }, String(e.value)))))));
}

/** The series of a label pair written `name=value`, as a selector. */
function pairSelector(pair) {
  const at = pair.indexOf('=');
  return `{${pair.slice(0, at)}=${JSON.stringify(pair.slice(at + 1))}}`;
}

/** How many series each value of a label name has. */
const byLabel = (name) => `count by (${name}) ({${name}!=""})`;

/** Appends what `render` builds to `main`, or its error. */
async function part(main, render) {
  try {
    main.append(await render());
  } catch (e) {
    main.append(el('div', { class: 'error', role: 'alert' }, e.message));
  }
}

async function tsdbStatus(prefix) {
  const { data } = await api(prefix, 'status/tsdb');
  const head = data.headStats || {};
  // an empty head's bounds are the extreme integers, which are no dates
  const when = (ms) => (Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : '');
  return el('div', { class: 'tsdb' },
    keyValues('Head', [['Series', head.numSeries], ['Label pairs', head.numLabelPairs], ['Chunks', head.chunkCount],
      ['Min time', when(head.minTime)], ['Max time', when(head.maxTime)]]),
    ranking('Highest-cardinality metric names', data.seriesCountByMetricName, (name) => name),
    ranking('Highest-cardinality label names', data.labelValueCountByLabelName, byLabel),
    ranking('Label names using the most memory (bytes)', data.memoryInBytesByLabelName, byLabel),
    ranking('Most frequent label pairs', data.seriesCountByLabelValuePair, pairSelector));
}

const flags = async (prefix) => keyValues('Command-line flags', Object.entries((await api(prefix, 'status/flags')).data).sort());

const config = async (prefix) => el('section', { class: 'pool' }, el('h2', {}, 'Configuration'),
  el('pre', { class: 'config' }, (await api(prefix, 'status/config')).data.yaml));

export async function statusPage(main, prefix) {
  main.append(el('h1', {}, 'Status'),
    el('p', { class: 'status-links' }, ['tsdb-status', 'flags', 'config', 'service-discovery']
      .map((page) => el('a', { href: `${prefix}/${page}` }, page)).flatMap((a, i) => (i ? [' · ', a] : [a]))));
  await part(main, async () => keyValues('Build information', Object.entries((await api(prefix, 'status/buildinfo')).data)));
  // the API keeps Go's runtime fields for Prometheus's clients; they say nothing of promflow
  const goOnly = new Set(['goroutineCount', 'GOMAXPROCS', 'GOMEMLIMIT', 'GOGC', 'GODEBUG']);
  await part(main, async () => keyValues('Runtime information',
    Object.entries((await api(prefix, 'status/runtimeinfo')).data).filter(([k]) => !goOnly.has(k))));
  await part(main, () => tsdbStatus(prefix));
  await part(main, () => flags(prefix));
  await part(main, () => config(prefix));
}

export async function tsdbStatusPage(main, prefix) {
  main.append(el('h1', {}, 'TSDB status'));
  await part(main, () => tsdbStatus(prefix));
}

export async function flagsPage(main, prefix) {
  main.append(el('h1', {}, 'Command-line flags'));
  await part(main, () => flags(prefix));
}

export async function configPage(main, prefix) {
  main.append(el('h1', {}, 'Configuration'));
  await part(main, () => config(prefix));
}

/** Every target of every scrape pool: its labels as discovered, and after relabelling (or dropped). */
export async function serviceDiscoveryPage(main, prefix) {
  main.append(el('h1', {}, 'Service discovery'));
  await part(main, async () => {
    const { data } = await api(prefix, 'targets', { state: 'any' });
    const pools = new Map();
    const add = (pool, row) => pools.set(pool, [...(pools.get(pool) || []), row]);
    for (const t of data.activeTargets || []) add(t.scrapePool, [t.discoveredLabels, seriesName(t.labels)]);
    for (const t of data.droppedTargets || []) {
      add(t.scrapePool || (t.discoveredLabels || {}).job || '', [t.discoveredLabels, 'Dropped']);
    }
    const sections = [...pools.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([pool, rows]) =>
      el('section', { class: 'pool' }, el('h2', {}, pool),
        el('table', { class: 'discovery' },
          el('thead', {}, el('tr', {}, el('th', {}, 'Discovered labels'), el('th', {}, 'Target labels'))),
          el('tbody', {}, rows.map(([discovered, target]) => el('tr', {},
            el('td', {}, seriesName(discovered)), el('td', {}, target)))))));
    return el('div', { class: 'pools' }, sections.length ? sections : el('p', { class: 'empty' }, 'No targets'));
  });
}
