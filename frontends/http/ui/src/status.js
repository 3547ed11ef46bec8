// The status page (`/status`): build and runtime information, the head's statistics and its
// highest-cardinality metrics and labels, the flags and the configuration.
import { api, el } from './dom.js';

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

export async function statusPage(main, prefix) {
  main.append(el('h1', {}, 'Status'));
  const part = async (render) => {
    try {
      main.append(await render());
    } catch (e) {
      main.append(el('div', { class: 'error', role: 'alert' }, e.message));
    }
  };
  await part(async () => keyValues('Build information', Object.entries((await api(prefix, 'status/buildinfo')).data)));
  await part(async () => keyValues('Runtime information', Object.entries((await api(prefix, 'status/runtimeinfo')).data)));
  await part(async () => {
    const { data } = await api(prefix, 'status/tsdb');
    const head = data.headStats || {};
    const when = (ms) => (ms ? new Date(ms).toISOString() : '');
    return el('div', { class: 'tsdb' },
      keyValues('Head', [['Series', head.numSeries], ['Label pairs', head.numLabelPairs], ['Chunks', head.chunkCount],
        ['Min time', when(head.minTime)], ['Max time', when(head.maxTime)]]),
      ranking('Highest-cardinality metric names', data.seriesCountByMetricName, (name) => name),
      ranking('Highest-cardinality label names', data.labelValueCountByLabelName, byLabel),
      ranking('Label names using the most memory (bytes)', data.memoryInBytesByLabelName, byLabel),
      ranking('Most frequent label pairs', data.seriesCountByLabelValuePair, pairSelector));
  });
  await part(async () => keyValues('Command-line flags', Object.entries((await api(prefix, 'status/flags')).data).sort()));
  await part(async () => el('section', { class: 'pool' }, el('h2', {}, 'Configuration'),
    el('pre', { class: 'config' }, (await api(prefix, 'status/config')).data.yaml)));
}
