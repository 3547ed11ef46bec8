// The targets page (`/targets`): every active target by scrape pool, with its health, last
// scrape, duration and error, and its labels after relabelling (before, on demand), read
// again every few seconds.
import { api, el, labelChips, refreshing, seriesName } from './dom.js';

export async function targetsPage(main, prefix) {
  const filter = el('input', { type: 'search', class: 'filter', placeholder: 'Filter by endpoint or labels', 'aria-label': 'Filter targets' });
  const unhealthy = el('input', { type: 'checkbox', class: 'unhealthy' });
  const list = el('div', { class: 'pools' });
  main.append(el('h1', {}, 'Targets'),
    el('div', { class: 'controls' }, filter, el('label', {}, unhealthy, ' Unhealthy only')), list);
  let targets = [];
  // the targets whose labels before relabelling are shown: kept open across refreshes
  const opened = new Set();
  const render = () => {
    const text = filter.value.toLowerCase();
    const shown = targets.filter((t) => (!unhealthy.checked || t.health !== 'up')
      && (!text || `${t.scrapeUrl} ${seriesName(t.labels)}`.toLowerCase().includes(text)));
    const pools = new Map();
    for (const t of shown) pools.set(t.scrapePool, [...(pools.get(t.scrapePool) || []), t]);
    list.replaceChildren(...[...pools.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([pool, ts]) => {
      const up = ts.filter((t) => t.health === 'up').length;
      return el('section', { class: 'pool' },
        el('h2', {}, `${pool} (${up}/${ts.length} up)`),
        el('table', { class: 'targets' },
          el('thead', {}, el('tr', {}, ['Endpoint', 'State', 'Labels', 'Last scrape', 'Scrape duration', 'Error'].map((h) => el('th', {}, h)))),
          el('tbody', {}, ts.map((t) => row(t, opened)))));
    }));
    if (!shown.length) list.append(el('p', { class: 'empty' }, 'No targets'));
  };
  filter.addEventListener('input', render);
  unhealthy.addEventListener('change', render);
  const failure = el('div', { class: 'error', role: 'alert', hidden: true });
  main.insertBefore(failure, list);
  await refreshing(failure, async () => {
    const { data } = await api(prefix, 'targets', { state: 'active' });
    targets = data.activeTargets || [];
    render();
  });
}

function row(t, opened) {
  const key = `${t.scrapePool} ${t.scrapeUrl}`;
  const ago = t.lastScrape && !t.lastScrape.startsWith('0001')
    ? `${((Date.now() - Date.parse(t.lastScrape)) / 1000).toFixed(1)}s ago`
    : 'never';
  return el('tr', { class: `target ${t.health}` },
    // only http and https are links: a relabelled scheme must never become script
    el('td', {}, /^https?:\/\//i.test(t.scrapeUrl) ? el('a', { href: t.scrapeUrl }, t.scrapeUrl) : t.scrapeUrl),
    el('td', {}, el('span', { class: `health ${t.health}` }, t.health.toUpperCase())),
    el('td', {}, labelChips(t.labels),
      el('details', {
        open: opened.has(key),
        ontoggle: (e) => (e.target.open ? opened.add(key) : opened.delete(key)),
      }, el('summary', {}, 'before relabelling'), labelChips(t.discoveredLabels))),
    el('td', {}, ago),
    el('td', {}, `${(t.lastScrapeDuration * 1000).toFixed(1)} ms`),
    el('td', { class: 'error' }, t.lastError || ''));
}
