// promflow's web UI: one page script for every page; the server serves the same HTML at each
// page's path and this script renders the page the path names.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { graphPage } from './graph.js';
import { targetsPage } from './targets.js';
import { alertsPage, rulesPage } from './alerts.js';
import { configPage, flagsPage, serviceDiscoveryPage, statusPage, tsdbStatusPage } from './status.js';
import { sqlPage } from './sql.js';
import { el } from './dom.js';

// The pages in the navigation bar; the status pages of Prometheus 3's paths are linked from
// the status page.
const pages = { graph: graphPage, alerts: alertsPage, rules: rulesPage, targets: targetsPage, status: statusPage, sql: sqlPage };
const statusPages = { 'tsdb-status': tsdbStatusPage, flags: flagsPage, config: configPage, 'service-discovery': serviceDiscoveryPage };
const all = { ...pages, ...statusPages };
// The path the server is served under (`--web.route-prefix`): everything before the page's name.
const match = window.location.pathname.match(/^(.*)\/([a-z-]+)\/?$/);
const prefix = match ? match[1] : '';
const page = match && all[match[2]] ? match[2] : 'graph';
const active = statusPages[page] ? 'status' : page;

const nav = el('nav', { class: 'top' },
  el('a', { class: 'brand', href: `${prefix}/graph` }, 'promflow'),
  ...Object.keys(pages).map((name) =>
    el('a', { href: `${prefix}/${name}`, class: name === active ? 'active' : '' },
      name === 'sql' ? 'SQL' : name[0].toUpperCase() + name.slice(1))),
);
const main = el('main', {});
document.body.append(nav, main);
all[page](main, prefix);
