// Small DOM and API helpers shared by the pages.

/** An element with attributes (`on*` keys become listeners) and children (strings or nodes). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** An SVG element, as `el` makes HTML ones. */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** Calls the HTTP API; resolves to `data`, rejects with the API's error text. */
export async function api(prefix, path, params) {
  const query = new URLSearchParams(params || {});
  const response = await fetch(`${prefix}/api/v1/${path}?${query}`);
  let json;
  try {
    json = await response.json();
  } catch (e) {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (json.status !== 'success') throw new Error(json.error || `${response.status} ${response.statusText}`);
  return { data: json.data, warnings: json.warnings || [], infos: json.infos || [] };
}

/** A label set as PromQL writes a series: `name{a="b", …}`. */
export function seriesName(metric) {
  const { __name__: name, ...labels } = metric || {};
  const pairs = Object.entries(labels).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return `${name || ''}{${pairs.join(', ')}}`;
}

/** A duration in seconds as Prometheus writes one (`1h30m`). */
export function formatDuration(seconds) {
  const units = [['w', 604800], ['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
  let rest = Math.round(seconds);
  let out = '';
  for (const [unit, size] of units) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out || '0s';
}

/** A Prometheus duration (`1h30m`, `90s`, `2d`) in seconds, or null. */
export function parseDuration(text) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
  const parts = String(text).trim().match(/^((\d+)(ms|s|m|h|d|w|y))+$/);
  if (!parts) return null;
  let total = 0;
  for (const [, n, unit] of String(text).trim().matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) {
    total += Number(n) * units[unit];
  }
  return total > 0 ? total : null;
}

/** A label set as chips (`name="value"`). */
export function labelChips(set) {
  return el('div', { class: 'labels' },
    Object.entries(set || {}).map(([k, v]) => el('span', { class: 'label' }, `${k}="${v}"`)));
}

/** How often the pages that follow the server's state (targets, alerts, rules) read it again. */
const REFRESH_MS = 5000;

/**
 * Runs `load` now and every few seconds, showing a failure in `failure` (hidden while
 * loads succeed): targets and rules change state between reads, and the pages follow.
 */
export async function refreshing(failure, load) {
  const run = async () => {
    try {
      await load();
      failure.hidden = true;
    } catch (e) {
      failure.textContent = e.message;
      failure.hidden = false;
    }
  };
  await run();
  setInterval(run, REFRESH_MS);
}
