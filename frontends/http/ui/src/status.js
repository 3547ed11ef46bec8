// The status page (`/status`): build and runtime information, the head's statistics and its
// highest-cardinality metrics and labels, the flags and the configuration; and the SQL
// console (`/sql`): a statement, its result table.
import { api, el } from './dom.js';

function keyValues(title, pairs) {
  return el('section', { class: 'pool' }, el('h2', {}, title),
    el('table', { class: 'kv' }, el('tbody', {}, pairs.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, String(v)))))));
}

function ranking(title, entries) {
  return el('section', { class: 'pool' }, el('h2', {}, title),
    el('table', { class: 'ranking' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'Count'))),
      el('tbody', {}, (entries || []).map((e) => el('tr', {}, el('td', {}, e.name), el('td', { class: 'value' }, String(e.value)))))));
}

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
      ranking('Highest-cardinality metric names', data.seriesCountByMetricName),
      ranking('Highest-cardinality label names', data.labelValueCountByLabelName),
      ranking('Label names using the most memory (bytes)', data.memoryInBytesByLabelName),
      ranking('Most frequent label pairs', data.seriesCountByLabelValuePair));
  });
  await part(async () => keyValues('Command-line flags', Object.entries((await api(prefix, 'status/flags')).data).sort()));
  await part(async () => el('section', { class: 'pool' }, el('h2', {}, 'Configuration'),
    el('pre', { class: 'config' }, (await api(prefix, 'status/config')).data.yaml)));
}

export function sqlPage(main, prefix) {
  const input = el('textarea', {
    class: 'sql', rows: 5, 'aria-label': 'SQL statement', spellcheck: 'false',
    placeholder: "SELECT job, avg(value) FROM up WHERE ts > now() - INTERVAL '5 minutes' GROUP BY job",
  });
  const messages = el('div', { class: 'messages' });
  const result = el('div', { class: 'body' });
  const run = async () => {
    messages.replaceChildren();
    result.replaceChildren();
    const query = input.value.trim();
    if (!query) return;
    const params = new URLSearchParams(window.location.search);
    params.set('q', query);
    window.history.replaceState(null, '', `${window.location.pathname}?${params}`);
    try {
      const { data } = await api(prefix, 'sql', { query });
      const cell = (v, type) => (v === null ? 'NULL' : type === 'timestamp' && typeof v === 'number' ? new Date(v * 1000).toISOString() : String(v));
      result.append(el('p', { class: 'muted' }, `${data.rows.length} row${data.rows.length === 1 ? '' : 's'}`),
        el('table', { class: 'result sql' },
          el('thead', {}, el('tr', {}, data.columns.map((c) => el('th', { title: c.type }, c.name)))),
          el('tbody', {}, data.rows.map((r) => el('tr', {}, r.map((v, i) => el('td', { class: 'value' }, cell(v, data.columns[i].type))))))));
    } catch (e) {
      messages.append(el('div', { class: 'error', role: 'alert' }, e.message));
    }
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  main.append(el('h1', {}, 'SQL'),
    el('section', { class: 'panel' }, input,
      el('div', { class: 'controls' }, el('button', { class: 'execute', onclick: run }, 'Run'),
        el('span', {}, 'Ctrl+Enter runs · every metric is a table (docs/sql.md)')),
      messages, result));
  const initial = new URLSearchParams(window.location.search).get('q');
  if (initial) {
    input.value = initial;
    run();
  }
}
