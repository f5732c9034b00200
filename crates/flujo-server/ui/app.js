// Flujo web UI: a hash-routed single page over the JSON API of `flujo serve` (docs/web-ui.md).
// Plain ES module, no framework, nothing fetched but the API. Every piece of API data reaches the page as a
// text node or an attribute value (the `h` helper); no HTML string is ever parsed.

const TOKEN_KEY = 'flujo.apiToken';
const FINAL = new Set(['completed', 'failed', 'cancelled']);
const STATUSES = ['queued', 'running', 'paused', 'completed', 'failed', 'cancelled'];
const PAGE_SIZE = 50;
const POLL_MS = 2000;

const main = document.getElementById('main');

// ---------------------------------------------------------------------------------------------------------
// DOM and formatting helpers

/** Creates an element. `attrs`: properties (`on*` functions become listeners, `class`, `for`, `aria-*`,
 * `data-*` become attributes); children: nodes, strings (as text), arrays, or null/false (skipped). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class' || key === 'for' || key === 'role' || key === 'scope' || key === 'colspan'
      || key.startsWith('aria-') || key.startsWith('data-')) {
      el.setAttribute(key, value === true ? '' : String(value));
    } else {
      el[key] = value;
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let idCounter = 0;
function uid(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

function fmtTime(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) return '—';
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function fmtCost(usd) {
  if (typeof usd !== 'number' || !Number.isFinite(usd)) return '—';
  if (usd === 0) return '$0';
  return usd < 0.01 ? `$${usd.toFixed(6)}` : `$${usd.toFixed(4)}`;
}

function fmtInt(n) {
  return typeof n === 'number' && Number.isFinite(n) ? n.toLocaleString('en-US') : '—';
}

function tokensOf(t) {
  if (typeof t === 'number') return t;
  if (t && typeof t === 'object') return (t.prompt || 0) + (t.completion || 0);
  return 0;
}

function json(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

function badge(status, big) {
  const s = String(status || 'unknown');
  return h('span', { class: `badge ${s.replace(/[^a-z_]/g, '')}${big ? ' big' : ''}` }, s);
}

function jsonBlock(title, value, open, cls) {
  return h('details', { open: !!open, class: cls || null }, h('summary', {}, title), h('pre', { class: 'json' }, json(value)));
}

function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, messageOf(err));
}

function messageOf(err) {
  if (err instanceof ApiError) return `${err.message} (${err.kind}, HTTP ${err.status})`;
  return String(err && err.message ? err.message : err);
}

function runLink(runId) {
  return h('a', { href: `#/runs/${encodeURIComponent(runId)}`, class: 'mono' }, runId);
}

function pipelineLink(name) {
  return h('a', { href: `#/pipelines/${encodeURIComponent(name)}` }, name);
}

// ---------------------------------------------------------------------------------------------------------
// The API: bearer token from localStorage, JSON in and out, errors as ApiError

class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server: ${e.message}`);
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    if (res.status === 401) showTokenForm(true);
    const e = data && data.error ? data.error : {};
    throw new ApiError(res.status, e.kind || `http_${res.status}`, e.message || res.statusText || 'request failed');
  }
  return data;
}

function eventsUrl(runId) {
  const t = token();
  const q = t ? `?token=${encodeURIComponent(t)}` : '';
  return `/api/runs/${encodeURIComponent(runId)}/events${q}`;
}

// ---------------------------------------------------------------------------------------------------------
// Token form (shown when the API answers 401, or when a token is stored)

const tokenForm = document.getElementById('token-form');
const tokenInput = document.getElementById('token-input');

function showTokenForm(focus) {
  tokenForm.hidden = false;
  if (focus && document.activeElement !== tokenInput) tokenInput.focus();
}

tokenForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  try {
    localStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  } catch {
    // Storage refused (private mode): the token lasts for this page only.
  }
  route();
});
document.getElementById('token-clear').addEventListener('click', () => {
  try {
    localStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
  tokenInput.value = '';
  route();
});
if (token()) {
  tokenInput.value = token();
  tokenForm.hidden = false;
}

// ---------------------------------------------------------------------------------------------------------
// Router: `#/runs`, `#/runs/ID`, `#/approvals`, `#/pipelines`, `#/pipelines/NAME`. Each page gets a `page`
// object whose cleanups (timers, event sources) run when the user navigates away.

let current = null;

class Page {
  constructor() {
    this.cleanups = [];
    this.alive = true;
  }

  onLeave(fn) {
    this.cleanups.push(fn);
  }

  leave() {
    this.alive = false;
    for (const fn of this.cleanups) fn();
    this.cleanups = [];
  }

  /** Calls `fn` every `ms` while the page is shown and the tab is visible (never two at once). */
  every(ms, fn) {
    let busy = false;
    const timer = setInterval(async () => {
      if (busy || document.visibilityState !== 'visible') return;
      busy = true;
      try {
        await fn();
      } finally {
        busy = false;
      }
    }, ms);
    this.onLeave(() => clearInterval(timer));
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, queryPart] = raw.split('?');
  const decode = (x) => {
    try {
      return decodeURIComponent(x);
    } catch {
      return x;
    }
  };
  const parts = pathPart.split('/').filter(Boolean).map(decode);
  return { parts, query: new URLSearchParams(queryPart || '') };
}

function route() {
  if (current) current.leave();
  const page = new Page();
  current = page;
  const { parts, query } = parseHash();
  const section = parts[0] || 'runs';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (section !== 'approvals') refreshCount();
  let render;
  if (section === 'runs' && parts.length === 1) render = () => runsPage(page, query);
  else if (section === 'runs' && parts.length === 2) render = () => runPage(page, parts[1]);
  else if (section === 'approvals') render = () => approvalsPage(page);
  else if (section === 'pipelines' && parts.length === 1) render = () => pipelinesPage(page);
  else if (section === 'pipelines' && parts.length === 2) render = () => pipelinePage(page, parts[1]);
  else render = () => notFound();
  Promise.resolve()
    .then(render)
    .catch((e) => {
      if (page.alive) main.append(errorBox(e));
    });
}

function notFound() {
  document.title = 'Not found · Flujo';
  main.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/runs' }, 'Go to the runs.')));
}

/** Moves focus to the main region after navigation (for keyboard and screen reader users). */
function focusMain() {
  if (document.activeElement === document.body || !document.activeElement) main.focus({ preventScroll: true });
}

// ---------------------------------------------------------------------------------------------------------
// Runs page

async function runsPage(page, query) {
  document.title = 'Runs · Flujo';
  const status = query.get('status') || '';
  const pipeline = query.get('pipeline') || '';
  const table = h('tbody');
  const liveNote = h('span', { class: 'live', 'aria-live': 'off' }, 'live');
  const errorSlot = h('div');
  const moreButton = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  const pipelineSelect = h('select', { id: 'filter-pipeline', name: 'pipeline' }, h('option', { value: '' }, 'all'));
  const statusSelect = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'all'),
    STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)));

  const startPanel = startRunForm();
  main.append(
    h('h1', {}, 'Runs'),
    startPanel.el,
    h('div', { class: 'toolbar' },
      h('form', {
        class: 'row', role: 'search', 'aria-label': 'Filter runs',
        onsubmit: (ev) => ev.preventDefault(),
      },
      h('div', { class: 'field' }, h('label', { for: 'filter-status' }, 'Status'), statusSelect),
      h('div', { class: 'field' }, h('label', { for: 'filter-pipeline' }, 'Pipeline'), pipelineSelect)),
      liveNote),
    errorSlot,
    h('div', { class: 'table-wrap' },
      h('table', { class: 'runs' },
        h('caption', { class: 'muted small', hidden: true }, 'Runs, newest first'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Run'),
          h('th', { scope: 'col' }, 'Pipeline'),
          h('th', { scope: 'col' }, 'Status'),
          h('th', { scope: 'col' }, 'Started'),
          h('th', { scope: 'col', class: 'num' }, 'Duration'),
          h('th', { scope: 'col', class: 'num' }, 'Cost'),
          h('th', { scope: 'col', class: 'num' }, 'Tokens'),
          h('th', { scope: 'col', class: 'num' }, 'Pending'))),
        table)),
    h('div', { class: 'pager' }, moreButton),
  );
  focusMain();

  const setFilter = () => {
    const q = new URLSearchParams();
    if (statusSelect.value) q.set('status', statusSelect.value);
    if (pipelineSelect.value) q.set('pipeline', pipelineSelect.value);
    const s = q.toString();
    location.hash = s ? `#/runs?${s}` : '#/runs';
  };
  statusSelect.addEventListener('change', setFilter);
  pipelineSelect.addEventListener('change', setFilter);

  // The pipelines for the filter and the start form.
  api('GET', '/api/pipelines').then((data) => {
    if (!page.alive) return;
    const names = (data.pipelines || []).map((p) => p.name);
    if (pipeline && !names.includes(pipeline)) names.push(pipeline);
    for (const n of names) pipelineSelect.append(h('option', { value: n, selected: n === pipeline }, n));
    startPanel.setPipelines(data.pipelines || []);
  }).catch((e) => {
    if (page.alive) startPanel.setError(e);
  });

  let loaded = 0;
  let cursor = null;
  const filterQuery = (limit, from) => {
    const q = new URLSearchParams();
    if (status) q.set('status', status);
    if (pipeline) q.set('pipeline', pipeline);
    q.set('limit', String(limit));
    if (from) q.set('cursor', from);
    return `/api/runs?${q}`;
  };
  // Rows are kept by run id while their data is unchanged, so a refresh does not take the focus away.
  let rows = new Map();
  const render = (runs, replace) => {
    const next = new Map();
    const els = runs.map((r) => {
      const key = JSON.stringify(r);
      const old = rows.get(r.run_id);
      const el = old && old.key === key ? old.el : runRow(r);
      next.set(r.run_id, { key, el });
      return el;
    });
    if (replace) {
      const same = els.length === table.children.length && els.every((el, i) => {
        const at = table.children[i];
        return at === el || (at.dataset.run === runs[i].run_id);
      });
      if (same) {
        els.forEach((el, i) => {
          if (table.children[i] !== el) table.children[i].replaceWith(el);
        });
      } else {
        table.replaceChildren(...els);
      }
      rows = next;
    } else {
      for (const [k, v] of next) rows.set(k, v);
      table.querySelector('td.empty')?.parentElement.remove();
      table.append(...els);
    }
    if (!table.children.length) {
      table.append(h('tr', {}, h('td', { colspan: 8, class: 'empty' },
        status || pipeline ? 'No runs match these filters.' : 'No runs yet. Start one above.')));
    }
  };
  const load = async (replace) => {
    try {
      const limit = replace ? Math.max(PAGE_SIZE, loaded) : PAGE_SIZE;
      const data = await api('GET', filterQuery(limit, replace ? null : cursor));
      if (!page.alive) return;
      errorSlot.replaceChildren();
      const runs = data.runs || [];
      loaded = replace ? runs.length : loaded + runs.length;
      cursor = data.next_cursor || null;
      moreButton.hidden = !cursor;
      render(runs, replace);
    } catch (e) {
      if (page.alive) errorSlot.replaceChildren(errorBox(e));
    }
  };
  moreButton.addEventListener('click', () => load(false));
  await load(true);
  // Live: the loaded rows are fetched again every 2 s while the tab is visible.
  page.every(POLL_MS, () => load(true));
}

function runRow(r) {
  const pending = r.pending || 0;
  return h('tr', { 'data-run': r.run_id },
    h('td', {}, runLink(r.run_id)),
    h('td', {}, pipelineLink(r.pipeline)),
    h('td', {}, badge(r.status), r.error && r.error.message
      ? h('div', { class: 'feedback', title: r.error.message }, truncate(r.error.message, 80)) : null),
    h('td', {}, fmtTime(r.created_at_ms)),
    h('td', { class: 'num' }, fmtDuration(r.duration_ms ?? (FINAL.has(r.status) ? null : Date.now() - r.created_at_ms))),
    h('td', { class: 'num' }, fmtCost(r.total_cost_usd)),
    h('td', { class: 'num' }, fmtInt(r.total_tokens)),
    h('td', { class: 'num' }, pending
      ? h('a', { href: '#/approvals', 'aria-label': `${pending} pending approvals` }, String(pending)) : '0'),
  );
}

function truncate(s, n) {
  const t = String(s);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/** The "start a run" form: pipeline, input (JSON or text), optional context JSON. */
function startRunForm() {
  const select = h('select', { id: 'start-pipeline', name: 'pipeline', required: true });
  const input = h('textarea', { id: 'start-input', name: 'input', rows: 3, placeholder: '{"topic": "…"}  or plain text' });
  const asJson = h('input', { type: 'radio', name: 'input-mode', id: 'start-mode-json', value: 'json', checked: true });
  const asText = h('input', { type: 'radio', name: 'input-mode', id: 'start-mode-text', value: 'text' });
  const context = h('textarea', { id: 'start-context', name: 'context', rows: 2, placeholder: '{"user": "ada"}  (optional)' });
  const errorSlot = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', id: 'start-submit' }, 'Start run');
  const details = h('details', { class: 'panel', id: 'start-run' },
    h('summary', {}, 'Start a run'),
    h('form', {
      onsubmit: async (ev) => {
        ev.preventDefault();
        errorSlot.replaceChildren();
        const body = { pipeline: select.value };
        if (!body.pipeline) {
          errorSlot.append(errorBox('Choose a pipeline.'));
          return;
        }
        const raw = input.value;
        if (asJson.checked) {
          if (raw.trim()) {
            try {
              body.input = JSON.parse(raw);
            } catch (e) {
              errorSlot.append(errorBox(`Input is not valid JSON: ${e.message}`));
              input.focus();
              return;
            }
          }
        } else {
          body.input = raw;
        }
        if (context.value.trim()) {
          try {
            body.context = JSON.parse(context.value);
          } catch (e) {
            errorSlot.append(errorBox(`Context is not valid JSON: ${e.message}`));
            context.focus();
            return;
          }
        }
        submit.disabled = true;
        try {
          const res = await api('POST', '/api/runs', body);
          location.hash = `#/runs/${encodeURIComponent(res.run_id)}`;
        } catch (e) {
          errorSlot.append(errorBox(e));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'start-pipeline' }, 'Pipeline'), select),
    h('fieldset', { class: 'radio-group' }, h('legend', {}, 'Input is'),
      h('span', {}, asJson, ' ', h('label', { for: 'start-mode-json' }, 'JSON')),
      h('span', {}, asText, ' ', h('label', { for: 'start-mode-text' }, 'text'))),
    h('div', { class: 'field' }, h('label', { for: 'start-input' }, 'Input'), input),
    h('div', { class: 'field' }, h('label', { for: 'start-context' }, 'Context (JSON object, optional)'), context),
    errorSlot,
    h('div', { class: 'actions' }, submit)));
  return {
    el: details,
    setPipelines(list) {
      select.replaceChildren();
      if (!list.length) select.append(h('option', { value: '' }, '(no pipelines served)'));
      for (const p of list) select.append(h('option', { value: p.name }, p.name));
    },
    setError(e) {
      errorSlot.replaceChildren(errorBox(e));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Run page

async function runPage(page, runId) {
  document.title = `Run ${runId} · Flujo`;
  const head = h('div');
  const pendingSlot = h('section', { 'aria-labelledby': 'pending-h' });
  const stepsSlot = h('section', { 'aria-labelledby': 'steps-h' });
  const dataSlot = h('section', { 'aria-labelledby': 'data-h' });
  const verifySlot = h('section', { 'aria-labelledby': 'verify-h' });
  const errorSlot = h('div', { 'aria-live': 'polite' });
  const statusLive = h('p', { class: 'muted small', 'aria-live': 'polite', id: 'run-live' });
  main.append(
    h('p', { class: 'small' }, h('a', { href: '#/runs' }, '← All runs')),
    head, errorSlot, statusLive, pendingSlot, stepsSlot, dataSlot, verifySlot);
  focusMain();

  // Pause forms stay put across refreshes while the same pauses are pending (a half-typed answer survives).
  let pendingKey = null;
  let lastStatus = null;
  let lastData = null;
  const expanded = new Set();
  let events = null;
  let poller = false;

  const refresh = async () => {
    let run;
    let journal;
    try {
      [run, journal] = await Promise.all([
        api('GET', `/api/runs/${encodeURIComponent(runId)}`),
        api('GET', `/api/runs/${encodeURIComponent(runId)}/journal`),
      ]);
    } catch (e) {
      if (page.alive) errorSlot.replaceChildren(errorBox(e));
      return;
    }
    if (!page.alive) return;
    errorSlot.replaceChildren();
    const focusKey = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.focusKey : undefined;
    head.replaceChildren(runHeader(run, () => refresh(), errorSlot));
    const records = journal.records || [];
    stepsSlot.replaceChildren(h('h2', { id: 'steps-h' }, 'Steps'), stepTree(run, records, expanded));
    const dataKey = JSON.stringify([run.input, run.output, run.context]);
    if (dataKey !== lastData) {
      lastData = dataKey;
      const openContext = dataSlot.querySelector('details.context')?.open ?? false;
      dataSlot.replaceChildren(h('h2', { id: 'data-h' }, 'Data'),
        h('div', { class: 'grid-2' },
          h('div', {}, jsonBlock('Input', run.input, true)),
          h('div', {}, jsonBlock('Output', run.output, true))),
        jsonBlock('Context', run.context, openContext, 'context'));
    }
    if (focusKey) main.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`)?.focus();
    const pending = run.pending || [];
    const key = pending.map((p) => p.pause_id).join(',');
    if (key !== pendingKey) {
      pendingKey = key;
      pendingSlot.replaceChildren();
      if (pending.length) {
        pendingSlot.append(h('h2', { id: 'pending-h' }, `Waiting for an answer (${pending.length})`),
          h('div', { class: 'cards' }, pending.map((p) => pauseCard({ ...p, run_id: run.run_id, pipeline: run.pipeline },
            { showRun: false, onAnswered: () => refresh() }))));
      }
    }
    if (run.status !== lastStatus) {
      if (lastStatus !== null) statusLive.textContent = `Status changed to ${run.status}.`;
      lastStatus = run.status;
      loadVerify();
    }
    if (FINAL.has(run.status)) {
      if (events) {
        events.close();
        events = null;
      }
    } else if (!events && !poller) {
      listen();
    }
  };

  const loadVerify = async () => {
    try {
      const v = await api('GET', `/api/runs/${encodeURIComponent(runId)}/verify`);
      if (page.alive) verifySlot.replaceChildren(h('h2', { id: 'verify-h' }, 'Journal integrity'), verifyView(v));
    } catch (e) {
      if (page.alive) verifySlot.replaceChildren(h('h2', { id: 'verify-h' }, 'Journal integrity'), errorBox(e));
    }
  };

  // Live updates: the run's event stream; a step_finished, status or end event fetches the run again
  // (coalesced). When the stream cannot be held open, a 2 s poll takes over.
  let scheduled = null;
  const soon = () => {
    if (scheduled) return;
    scheduled = setTimeout(() => {
      scheduled = null;
      if (page.alive) refresh();
    }, 250);
  };
  const listen = () => {
    if (typeof EventSource === 'undefined') {
      startPolling();
      return;
    }
    events = new EventSource(eventsUrl(runId));
    for (const name of ['step_finished', 'status']) events.addEventListener(name, soon);
    events.addEventListener('end', () => {
      if (events) events.close();
      events = null;
      soon();
    });
    events.addEventListener('error', () => {
      if (events && events.readyState === EventSource.CLOSED) {
        events = null;
        startPolling();
      }
    });
  };
  const startPolling = () => {
    if (poller) return;
    poller = true;
    page.every(POLL_MS, async () => {
      if (lastStatus === null || !FINAL.has(lastStatus)) await refresh();
    });
  };
  page.onLeave(() => {
    if (events) events.close();
    if (scheduled) clearTimeout(scheduled);
  });
  await refresh();
}

function runHeader(run, refresh, errorSlot) {
  const created = run.created_at_ms;
  const updated = run.updated_at_ms;
  const duration = FINAL.has(run.status) || run.status === 'paused' ? updated - created : Date.now() - created;
  const cancel = FINAL.has(run.status) ? null : h('button', {
    type: 'button',
    class: 'danger',
    id: 'cancel-run',
    'data-focus-key': 'cancel',
    onclick: async (ev) => {
      if (!window.confirm(`Cancel run ${run.run_id}? A cancelled run cannot be resumed.`)) return;
      ev.target.disabled = true;
      try {
        await api('POST', `/api/runs/${encodeURIComponent(run.run_id)}/cancel`);
        refresh();
      } catch (e) {
        errorSlot.replaceChildren(errorBox(e));
        ev.target.disabled = false;
      }
    },
  }, 'Cancel run');
  const fact = (label, value) => h('div', {}, h('dt', {}, label), h('dd', {}, value));
  return h('div', { class: 'panel' },
    h('div', { class: 'run-head' },
      h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.run_id)),
      h('span', { id: 'run-status' }, badge(run.status, true)),
      cancel),
    h('dl', { class: 'facts' },
      fact('Pipeline', pipelineLink(run.pipeline)),
      fact('Created', fmtTime(created)),
      fact('Updated', fmtTime(updated)),
      fact('Duration', fmtDuration(duration)),
      fact('Cost', fmtCost(run.total_cost_usd)),
      fact('Tokens', fmtInt(run.total_tokens)),
      fact('Queue', run.queue || '—'),
      fact('Generation', String(run.generation ?? 0)),
      fact('Journal records', fmtInt(run.journal_len))),
    run.error ? h('p', { class: 'error', id: 'run-error' },
      `${run.error.kind ? `${run.error.kind}: ` : ''}${run.error.message || json(run.error)}`) : null);
}

/** The step tree: journal records nested by path (a path's parent is the path without its last segment). */
function buildTree(records) {
  const nodes = new Map();
  const root = { path: '', children: [], records: [] };
  const node = (path) => {
    if (path === '') return root;
    let n = nodes.get(path);
    if (!n) {
      const cut = path.lastIndexOf('/');
      const parentPath = cut < 0 ? '' : path.slice(0, cut);
      n = { path, segment: path.slice(cut + 1), children: [], records: [], firstSeq: Infinity, start: Infinity };
      nodes.set(path, n);
      node(parentPath).children.push(n);
    }
    return n;
  };
  const sorted = [...records].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
  for (const r of sorted) {
    const n = node(String(r.path ?? ''));
    n.records.push(r);
  }
  // A node starts when its first record or first descendant starts; siblings are ordered by that.
  const settle = (n) => {
    for (const c of n.children) settle(c);
    for (const r of n.records) {
      n.firstSeq = Math.min(n.firstSeq, r.seq ?? Infinity);
      if (typeof r.started_at_ms === 'number') n.start = Math.min(n.start, r.started_at_ms);
    }
    for (const c of n.children) {
      n.firstSeq = Math.min(n.firstSeq, c.firstSeq);
      n.start = Math.min(n.start, c.start);
    }
    n.children.sort((a, b) => (a.start - b.start) || comparePaths(a.segment, b.segment) || (a.firstSeq - b.firstSeq));
  };
  settle(root);
  return root;
}

function comparePaths(a, b) {
  const na = Number(a);
  const nb = Number(b);
  if (Number.isFinite(na) && Number.isFinite(nb)) return na - nb;
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

function finishedAt(r) {
  if (typeof r.finished_at_ms === 'number') return r.finished_at_ms;
  if (typeof r.started_at_ms === 'number') return r.started_at_ms + (r.latency_ms || 0);
  return null;
}

/** The step tree table; `expanded` holds the paths whose details are open (kept across refreshes). */
function stepTree(run, records, expanded) {
  if (!records.length) {
    return h('p', { class: 'muted', id: 'steps-empty' }, FINAL.has(run.status) ? 'No step was journaled.' : 'No step has finished yet.');
  }
  const root = buildTree(records);
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const r of records) {
    if (typeof r.started_at_ms === 'number') t0 = Math.min(t0, r.started_at_ms);
    const f = finishedAt(r);
    if (f !== null) t1 = Math.max(t1, f);
  }
  if (typeof run.created_at_ms === 'number' && run.created_at_ms > 0) t0 = Math.min(t0, run.created_at_ms);
  if (!FINAL.has(run.status) && run.status !== 'paused') t1 = Math.max(t1, Date.now());
  const span = Math.max(1, t1 - t0);
  const body = h('tbody');
  const walk = (n, depth) => {
    const r = n.records[n.records.length - 1];
    const detailId = uid('step-detail');
    const rowId = uid('step');
    const hasDetail = !!r;
    const isOpen = expanded.has(n.path);
    const detailRow = hasDetail ? h('tr', { class: 'detail', id: detailId, hidden: !isOpen },
      h('td', { colspan: 8 },
        n.records.length > 1 ? h('p', { class: 'small muted' },
          `Executed ${n.records.length} times (journal seq ${n.records.map((x) => x.seq).join(', ')}); the last is shown.`) : null,
        r.feedback ? h('p', { class: 'feedback' }, r.feedback) : null,
        h('div', { class: 'small muted' }, `path ${r.path} · seq ${r.seq} · hash `, h('span', { class: 'mono' }, truncate(r.hash || '', 20))),
        h('pre', { class: 'json' }, json(r.output)),
        r.metadata && Object.keys(r.metadata).length ? jsonBlock('Metadata', r.metadata, false) : null)) : null;
    const toggle = hasDetail ? h('button', {
      type: 'button',
      class: 'linkish',
      'aria-expanded': String(isOpen),
      'aria-controls': detailId,
      'data-focus-key': `step:${n.path}`,
      onclick: (ev) => {
        const open = ev.currentTarget.getAttribute('aria-expanded') === 'true';
        ev.currentTarget.setAttribute('aria-expanded', String(!open));
        detailRow.hidden = open;
        if (open) expanded.delete(n.path);
        else expanded.add(n.path);
      },
    }, r.step || n.segment) : null;
    const indent = h('span', { class: 'indent' });
    indent.style.width = `${depth * 1.3}rem`;
    let bar = null;
    if (r && typeof r.started_at_ms === 'number') {
      const f = finishedAt(r) ?? r.started_at_ms;
      const el = h('div', { class: `bar ${r.status === 'failed' ? 'failed' : ''}` });
      el.style.left = `${((r.started_at_ms - t0) / span) * 100}%`;
      el.style.width = `${(Math.max(0, f - r.started_at_ms) / span) * 100}%`;
      bar = h('div', {
        class: 'bar-track',
        role: 'img',
        'aria-label': `from ${fmtDuration(r.started_at_ms - t0)} to ${fmtDuration(f - t0)} after the run started`,
        title: `${fmtTime(r.started_at_ms)} + ${fmtDuration(f - r.started_at_ms)}`,
      }, el);
    }
    body.append(h('tr', { id: rowId, class: r ? 'step' : 'step synthetic', 'data-path': n.path },
      h('td', { class: 'name' }, indent, r ? toggle : n.segment, ' ', r ? h('span', { class: 'kind' }, r.kind) : null),
      h('td', {}, r ? badge(r.status) : ''),
      h('td', { class: 'num' }, r ? String(r.attempts ?? '') : ''),
      h('td', { class: 'num' }, r ? fmtDuration(r.latency_ms) : ''),
      h('td', { class: 'num' }, r ? fmtInt(tokensOf(r.tokens)) : ''),
      h('td', { class: 'num' }, r ? fmtCost(r.cost_usd) : ''),
      h('td', { class: 'timeline' }, bar)));
    if (detailRow) body.append(detailRow);
    for (const c of n.children) walk(c, depth + 1);
  };
  for (const c of root.children) walk(c, 0);
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'steps', id: 'step-tree' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Step'),
        h('th', { scope: 'col' }, 'Status'),
        h('th', { scope: 'col', class: 'num' }, 'Attempts'),
        h('th', { scope: 'col', class: 'num' }, 'Latency'),
        h('th', { scope: 'col', class: 'num' }, 'Tokens'),
        h('th', { scope: 'col', class: 'num' }, 'Cost'),
        h('th', { scope: 'col' }, `Timeline (${fmtDuration(span)})`))),
      body));
}

function verifyView(v) {
  if (v.ok) {
    return h('p', { class: 'success', id: 'verify-result' },
      `Hash chain verified: ${fmtInt(v.records)} records`,
      v.last_hash ? [', last hash ', h('span', { class: 'mono' }, truncate(v.last_hash, 24))] : null, '.');
  }
  const b = v.broken || {};
  return h('p', { class: 'error', id: 'verify-result' },
    `Hash chain BROKEN at record ${b.seq ?? '?'} (path ${b.path ?? '?'}): ${b.reason ?? 'unknown reason'}.`);
}

// ---------------------------------------------------------------------------------------------------------
// Pauses: a form generated from the pause's input_schema

/** The single JSON Schema type a field is made for (`["string","null"]` → `string`). */
function schemaType(s) {
  if (!s || typeof s !== 'object') return null;
  if (Array.isArray(s.enum)) return 'enum';
  let t = s.type;
  if (Array.isArray(t)) t = t.find((x) => x !== 'null') || null;
  if (t) return t;
  if (s.properties && typeof s.properties === 'object') return 'object';
  if (s.items) return 'array';
  return null;
}

const LONG_TEXT = /comment|note|reason|feedback|text|body|description|explanation|details|message/i;

/** One form control for `schema`. Returns `{ el, read() }`: `read` gives `{ ok, value, skip }`. */
function fieldFor(name, label, schema, required) {
  const id = uid('f');
  const helpId = schema && schema.description ? uid('help') : null;
  const type = schemaType(schema);
  const labelEl = h('label', { for: id }, label, required ? h('span', { class: 'req', 'aria-hidden': 'true' }, '*') : null);
  const help = helpId ? h('span', { class: 'help', id: helpId }, schema.description) : null;
  const common = { id, name, 'aria-describedby': helpId, 'aria-required': required ? 'true' : null };
  const dflt = schema && 'default' in schema ? schema.default : undefined;

  if (type === 'enum') {
    const values = schema.enum;
    const select = h('select', common,
      dflt === undefined || !required ? h('option', { value: '' }, required ? '— choose —' : '(none)') : null,
      values.map((v, i) => h('option', { value: String(i), selected: dflt !== undefined && json(dflt) === json(v) },
        typeof v === 'string' ? v : JSON.stringify(v))));
    return {
      el: h('div', { class: 'field' }, labelEl, help, select),
      read: () => (select.value === '' ? { ok: true, skip: true } : { ok: true, value: values[Number(select.value)] }),
    };
  }
  if (type === 'boolean') {
    const box = h('input', { ...common, type: 'checkbox', checked: dflt === true });
    return {
      el: h('div', { class: 'field check' }, box, labelEl, help),
      read: () => ({ ok: true, value: box.checked }),
    };
  }
  if (type === 'number' || type === 'integer') {
    const input = h('input', {
      ...common,
      type: 'number',
      step: type === 'integer' ? '1' : 'any',
      min: schema.minimum ?? null,
      max: schema.maximum ?? null,
      value: typeof dflt === 'number' ? String(dflt) : '',
    });
    return {
      el: h('div', { class: 'field' }, labelEl, help, input),
      read: () => {
        const raw = input.value.trim();
        if (raw === '') return { ok: true, skip: true };
        const n = Number(raw);
        if (!Number.isFinite(n)) return { ok: false, message: `${label}: not a number` };
        return { ok: true, value: n };
      },
    };
  }
  if (type === 'string') {
    const long = (schema.maxLength ?? 0) > 200 || ['multiline', 'textarea'].includes(schema.format) || LONG_TEXT.test(name);
    const attrs = { ...common, value: typeof dflt === 'string' ? dflt : '' };
    const input = long ? h('textarea', { ...attrs, rows: 3 }) : h('input', { ...attrs, type: 'text' });
    if (!long) input.classList.add('wide');
    return {
      el: h('div', { class: 'field' }, labelEl, help, input),
      read: () => (input.value === '' && !required ? { ok: true, skip: true } : { ok: true, value: input.value }),
    };
  }
  // Objects, arrays, unions and untyped schemas: JSON (plain text accepted where no type is given).
  const untyped = type === null;
  const area = h('textarea', {
    ...common,
    rows: 4,
    class: 'mono',
    placeholder: untyped ? 'JSON, or plain text' : `JSON ${type || 'value'}`,
    value: dflt !== undefined ? json(dflt) : '',
  });
  return {
    el: h('div', { class: 'field' }, labelEl, help, area),
    read: () => {
      const raw = area.value;
      if (raw.trim() === '') return required || untyped ? { ok: true, value: untyped ? raw : null, skip: !untyped } : { ok: true, skip: true };
      try {
        return { ok: true, value: JSON.parse(raw) };
      } catch (e) {
        if (untyped) return { ok: true, value: raw };
        return { ok: false, message: `${label}: not valid JSON (${e.message})` };
      }
    },
  };
}

/** The controls for a whole pause answer: one per property for an object schema, else one field. */
function answerControls(schema) {
  const type = schemaType(schema);
  if (type === 'object' && schema.properties && Object.keys(schema.properties).length) {
    const required = new Set(Array.isArray(schema.required) ? schema.required : []);
    const fields = Object.entries(schema.properties).map(([name, sub]) => ({
      name,
      ...fieldFor(name, (sub && sub.title) || name, sub || {}, required.has(name)),
    }));
    return {
      els: fields.map((f) => f.el),
      read() {
        const answer = {};
        for (const f of fields) {
          const r = f.read();
          if (!r.ok) return r;
          if (!r.skip) answer[f.name] = r.value;
        }
        return { ok: true, value: answer };
      },
    };
  }
  const label = (schema && schema.title) || (type === null ? 'Answer (JSON, or plain text)' : 'Answer');
  const f = fieldFor('answer', label, schema || {}, true);
  return {
    els: [f.el],
    read() {
      const r = f.read();
      if (r.ok && r.skip) return { ok: true, value: type === 'boolean' ? false : null };
      return r;
    },
  };
}

/** A card for one pending pause with its answer form. */
function pauseCard(p, { showRun, onAnswered }) {
  const controls = answerControls(p.input_schema);
  const errorSlot = h('div', { 'aria-live': 'assertive', class: 'form-error' });
  const submit = h('button', { type: 'submit' }, 'Submit answer');
  const card = h('article', { class: 'card', 'data-pause': p.pause_id, 'data-run': p.run_id, 'aria-label': `Pause ${p.step}` });
  const form = h('form', {
    noValidate: true,
    onsubmit: async (ev) => {
      ev.preventDefault();
      errorSlot.replaceChildren();
      const r = controls.read();
      if (!r.ok) {
        errorSlot.append(errorBox(r.message));
        return;
      }
      submit.disabled = true;
      try {
        const res = await api('POST', `/api/runs/${encodeURIComponent(p.run_id)}/resume`, { pause_id: p.pause_id, answer: r.value });
        card.classList.add('answered');
        card.replaceChildren(
          h('h3', {}, p.step),
          h('p', { class: 'success', role: 'status' }, `Answered. Run ${p.run_id} is now ${res && res.status ? res.status : 'resumed'}. `,
            h('a', { href: `#/runs/${encodeURIComponent(p.run_id)}` }, 'Open the run')));
        refreshCount();
        if (onAnswered) onAnswered();
      } catch (e) {
        errorSlot.append(errorBox(e));
        submit.disabled = false;
      }
    },
  }, controls.els, errorSlot, h('div', { class: 'actions' }, submit));
  append(card, [
    h('h3', {}, p.step),
    h('div', { class: 'meta' },
      showRun ? ['Run ', runLink(p.run_id), ' · ', pipelineLink(p.pipeline)] : null,
      p.since_ms ? [showRun ? ' · ' : '', 'waiting since ', fmtTime(p.since_ms)] : null),
    p.message ? h('p', { class: 'message' }, p.message) : null,
    form,
    p.input_schema ? h('details', {}, h('summary', { class: 'small' }, 'Answer schema'), h('pre', { class: 'json' }, json(p.input_schema))) : null,
  ]);
  return card;
}

// ---------------------------------------------------------------------------------------------------------
// Approvals page

async function approvalsPage(page) {
  document.title = 'Approvals · Flujo';
  const list = h('div', { class: 'cards', id: 'approvals' });
  const errorSlot = h('div', { 'aria-live': 'polite' });
  const empty = h('p', { class: 'muted', id: 'approvals-empty', hidden: true }, 'Nothing waits for an answer.');
  main.append(
    h('div', { class: 'toolbar' }, h('h1', {}, 'Approvals'), h('span', { class: 'live' }, 'live')),
    h('p', { class: 'muted' }, 'Every pause waiting for a human, across runs. Answering resumes the run.'),
    errorSlot, empty, list);
  focusMain();
  // Cards are keyed by run and pause: a refresh adds new ones and drops gone ones, and leaves the others
  // (and what was typed in them) alone. Answered cards stay until the user leaves the page.
  const cards = new Map();
  const load = async () => {
    let data;
    try {
      data = await api('GET', '/api/approvals');
    } catch (e) {
      if (page.alive) errorSlot.replaceChildren(errorBox(e));
      return;
    }
    if (!page.alive) return;
    errorSlot.replaceChildren();
    const approvals = data.approvals || [];
    const seen = new Set();
    for (const a of approvals) {
      const key = `${a.run_id}\u0000${a.pause_id}`;
      seen.add(key);
      if (!cards.has(key)) {
        const card = pauseCard(a, { showRun: true });
        cards.set(key, card);
        list.append(card);
      }
    }
    for (const [key, card] of cards) {
      if (!seen.has(key) && !card.classList.contains('answered')) {
        card.remove();
        cards.delete(key);
      }
    }
    empty.hidden = cards.size > 0;
    setApprovalsCount(approvals.length);
  };
  await load();
  page.every(POLL_MS * 1.5, load);
}

const countEl = document.getElementById('approvals-count');
function setApprovalsCount(n) {
  countEl.hidden = !n;
  countEl.textContent = n ? String(n) : '';
  countEl.setAttribute('aria-label', `${n} waiting`);
}

// ---------------------------------------------------------------------------------------------------------
// Pipelines

async function pipelinesPage(page) {
  document.title = 'Pipelines · Flujo';
  main.append(h('h1', {}, 'Pipelines'));
  focusMain();
  const data = await api('GET', '/api/pipelines');
  if (!page.alive) return;
  const list = data.pipelines || [];
  if (!list.length) {
    main.append(h('p', { class: 'muted' }, 'This server offers no pipeline (see --pipelines).'));
    return;
  }
  main.append(h('div', { class: 'table-wrap' }, h('table', { id: 'pipelines' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Name'),
      h('th', { scope: 'col' }, 'Description'),
      h('th', { scope: 'col', class: 'num' }, 'Steps'),
      h('th', { scope: 'col' }, 'File'),
      h('th', { scope: 'col' }, 'Runs'))),
    h('tbody', {}, list.map((p) => h('tr', {},
      h('td', {}, pipelineLink(p.name)),
      h('td', {}, p.description || h('span', { class: 'muted' }, '—')),
      h('td', { class: 'num' }, String(p.steps ?? '')),
      h('td', { class: 'mono small' }, p.file || ''),
      h('td', {}, h('a', { href: `#/runs?pipeline=${encodeURIComponent(p.name)}` }, 'runs'))))))));
}

async function pipelinePage(page, name) {
  document.title = `${name} · Pipelines · Flujo`;
  main.append(h('p', { class: 'small' }, h('a', { href: '#/pipelines' }, '← All pipelines')));
  focusMain();
  const p = await api('GET', `/api/pipelines/${encodeURIComponent(name)}`);
  if (!page.alive) return;
  main.append(
    h('div', { class: 'panel' },
      h('h1', {}, 'Pipeline ', h('span', { class: 'mono' }, p.name)),
      p.description ? h('p', {}, p.description) : null,
      h('p', { class: 'muted small' }, `${p.steps ?? '?'} top-level steps · `, h('span', { class: 'mono' }, p.file || ''), ' · ',
        h('a', { href: `#/runs?pipeline=${encodeURIComponent(p.name)}` }, 'its runs'))),
    h('h2', {}, 'Graph'),
    h('div', { class: 'panel graph', id: 'pipeline-graph' }, flowView(p.tree || [])),
    h('details', {}, h('summary', {}, 'Mermaid source (paste into any Mermaid renderer)'), h('pre', { class: 'source' }, p.mermaid || '')),
    h('h2', {}, 'Blueprint'),
    h('pre', { class: 'source', id: 'pipeline-source' }, p.source || ''));
}

/** A sequence of steps top to bottom; a composite's children groups side by side under it. */
function flowView(steps) {
  return h('ol', { class: 'flow' }, steps.map((s) => {
    const groups = s.children || [];
    const kind = String(s.kind || '').replace(/[^a-z_]/g, '');
    return h('li', {},
      h('div', { class: `node kind-${kind}${groups.length ? ' composite' : ''}` },
        h('strong', {}, s.name), h('span', { class: 'kind' }, s.kind),
        groups.length ? h('div', { class: 'branches' }, groups.map((g) => h('div', { class: 'branch' },
          g.label ? h('div', { class: 'branch-label' }, g.label) : null,
          (g.steps || []).length ? flowView(g.steps) : h('span', { class: 'muted small' }, '(no steps)')))) : null));
  }));
}

// ---------------------------------------------------------------------------------------------------------
// Start

window.addEventListener('hashchange', route);
if (!location.hash || location.hash === '#' || location.hash === '#/') {
  history.replaceState(null, '', '#/runs');
}
route();
// The pending count in the navigation bar: fetched on navigation and every 10 s.
async function refreshCount() {
  if (document.visibilityState !== 'visible') return;
  try {
    const data = await api('GET', '/api/approvals');
    setApprovalsCount((data.approvals || []).length);
  } catch {
    // shown by the pages themselves
  }
}
setInterval(refreshCount, 10000);
