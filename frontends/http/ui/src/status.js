// The status page (`/status`): build and runtime information, the head's statistics and its
// highest-cardinality metrics and labels, the flags and the configuration.
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
