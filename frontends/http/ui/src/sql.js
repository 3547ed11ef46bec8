// The SQL console (`/sql`): a statement (kept in the URL as `?q=`), its result table.
import { api, el } from './dom.js';

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
