// The alerts page (`/alerts`): every alerting rule with its state and its active alerts
// (state, active since, value, labels, annotations), filterable by state and text; and the
// rules page (`/rules`): every rule group with its rules' health, last evaluation and error.
// A rule's expression links to the graph page; an alerting rule shows its annotations.
// Both are read again every few seconds.
import { api, el, formatDuration, labelChips, refreshing } from './dom.js';

const STATES = ['firing', 'pending', 'inactive'];

function since(iso) {
  if (!iso || iso.startsWith('0001')) return 'never';
  return `${formatDuration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`;
}

/** A sample value as the API writes it (Go's `%e`: `9.977777777777779e-01`), in plain
 * decimal notation where that is as short (`0.9977777777777779`). */
export function formatValue(text) {
  const v = Number(text);
  return Number.isFinite(v) ? String(v) : text;
}

/** A rule as in its file, its expression a link to the graph page's table of it. */
function ruleText(prefix, r) {
  const graph = `${prefix}/graph?${new URLSearchParams({ 'g0.expr': r.query, 'g0.tab': '1' })}`;
  return el('pre', { class: 'query' },
    r.type === 'alerting' ? `alert: ${r.name}\nexpr: ` : `record: ${r.name}\nexpr: `,
    el('a', { href: graph }, r.query),
    r.type === 'alerting' && r.duration ? `\nfor: ${formatDuration(r.duration)}` : '',
    ...Object.entries(r.type === 'alerting' ? r.annotations || {} : {}).map(([k, v], i) => `${i ? '' : '\nannotations:'}\n  ${k}: ${v}`));
}

export async function alertsPage(main, prefix) {
  const shown = new Set(STATES);
  const filter = el('input', { type: 'search', class: 'filter', placeholder: 'Filter by rule name or labels', 'aria-label': 'Filter alerts' });
  const boxes = STATES.map((s) => el('label', {}, el('input', {
    type: 'checkbox', class: `show-${s}`, checked: true,
    onchange: (e) => { if (e.target.checked) shown.add(s); else shown.delete(s); render(); },
  }), ` ${s[0].toUpperCase()}${s.slice(1)}`));
  const failure = el('div', { class: 'error', role: 'alert', hidden: true });
  const list = el('div', { class: 'rules' });
  main.append(el('h1', {}, 'Alerts'), el('div', { class: 'controls' }, filter, ...boxes), failure, list);
  const opened = new Set();
  let rules = [];
  const render = () => {
    const text = filter.value.toLowerCase();
    const counts = Object.fromEntries(STATES.map((s) => [s, rules.filter((r) => r.state === s).length]));
    boxes.forEach((b, i) => { b.lastChild.textContent = ` ${STATES[i][0].toUpperCase()}${STATES[i].slice(1)} (${counts[STATES[i]]})`; });
    // firing first, then pending, then inactive; in file order within a state
    const visible = rules.filter((r) => shown.has(r.state)
      && (!text || `${r.name} ${JSON.stringify(r.labels)} ${r.alerts.map((a) => JSON.stringify(a.labels)).join(' ')}`.toLowerCase().includes(text)))
      .sort((a, b) => STATES.indexOf(a.state) - STATES.indexOf(b.state));
    list.replaceChildren(...visible.map((r) => {
      const key = `${r.group} ${r.name}`;
      return el('details', {
        class: `rule ${r.state}`, open: opened.has(key) || r.state === 'firing',
        ontoggle: (e) => (e.target.open ? opened.add(key) : opened.delete(key)),
      },
      el('summary', {}, el('span', { class: `state ${r.state}` }, r.state.toUpperCase()), ` ${r.name} `,
        el('span', { class: 'muted' }, `(${r.alerts.length} active) · ${r.group}`)),
      ruleText(prefix, r),
      labelChips(r.labels),
      r.alerts.length ? el('table', { class: 'alerts' },
        el('thead', {}, el('tr', {}, ['Labels', 'State', 'Active since', 'Value', 'Annotations'].map((h) => el('th', {}, h)))),
        el('tbody', {}, r.alerts.map((a) => el('tr', { class: `alert ${a.state}` },
          el('td', {}, labelChips(a.labels)),
          el('td', {}, el('span', { class: `state ${a.state}` }, a.state.toUpperCase())),
          el('td', {}, since(a.activeAt)),
          el('td', { class: 'value' }, formatValue(a.value)),
          el('td', {}, Object.entries(a.annotations || {}).map(([k, v]) => el('div', {}, el('b', {}, `${k}: `), v))))))) : null);
    }));
    if (!visible.length) list.append(el('p', { class: 'empty' }, 'No alerting rules'));
  };
  filter.addEventListener('input', render);
  await refreshing(failure, async () => {
    const { data } = await api(prefix, 'rules', { type: 'alert' });
    rules = data.groups.flatMap((g) => g.rules.map((r) => ({ ...r, group: g.name, alerts: r.alerts || [] })));
    render();
  });
}

export async function rulesPage(main, prefix) {
  const failure = el('div', { class: 'error', role: 'alert', hidden: true });
  const list = el('div', { class: 'groups' });
  main.append(el('h1', {}, 'Rules'), failure, list);
  await refreshing(failure, async () => {
    const { data } = await api(prefix, 'rules', {});
    list.replaceChildren(...data.groups.map((g) => el('section', { class: 'pool group' },
      el('h2', {}, `${g.name} `, el('span', { class: 'muted' }, `${g.file} · every ${formatDuration(g.interval)} · last ${since(g.lastEvaluation)} in ${(g.evaluationTime * 1000).toFixed(1)} ms`)),
      el('table', { class: 'rules' },
        el('thead', {}, el('tr', {}, ['Rule', 'State', 'Error', 'Last evaluation', 'Evaluation time'].map((h) => el('th', {}, h)))),
        el('tbody', {}, g.rules.map((r) => el('tr', { class: `rule ${r.health}` },
          el('td', {}, ruleText(prefix, r), labelChips(r.labels)),
          el('td', {}, el('span', { class: `health ${r.health === 'ok' ? 'up' : r.health === 'err' ? 'down' : 'unknown'}` }, r.health.toUpperCase())),
          el('td', { class: 'error' }, r.lastError || ''),
          el('td', {}, since(r.lastEvaluation)),
          el('td', {}, `${(r.evaluationTime * 1000).toFixed(1)} ms`))))))));
    if (!data.groups.length) list.append(el('p', { class: 'empty' }, 'No rule groups'));
  });
}
