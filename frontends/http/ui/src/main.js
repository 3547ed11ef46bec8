// promflow's web UI: one page script for every page; the server serves the same HTML at each
// page's path and this script renders the page the path names.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { graphPage } from './graph.js';
import { targetsPage } from './targets.js';
import { alertsPage, rulesPage } from './alerts.js';
import { statusPage } from './status.js';
import { sqlPage } from './sql.js';
import { el } from './dom.js';

// The path the server is served under (`--web.route-prefix`): everything before the page's name.
const pages = { graph: graphPage, alerts: alertsPage, rules: rulesPage, targets: targetsPage, status: statusPage, sql: sqlPage };
const match = window.location.pathname.match(/^(.*)\/([a-z]+)\/?$/);
const prefix = match ? match[1] : '';
const page = match && pages[match[2]] ? match[2] : 'graph';

const nav = el('nav', { class: 'top' },
  el('a', { class: 'brand', href: `${prefix}/graph` }, 'promflow'),
  ...Object.keys(pages).map((name) =>
    el('a', { href: `${prefix}/${name}`, class: name === page ? 'active' : '' },
      name === 'sql' ? 'SQL' : name[0].toUpperCase() + name.slice(1))),
);
const main = el('main', {});
document.body.append(nav, main);
pages[page](main, prefix);
