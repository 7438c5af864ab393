// The status page's HTML, rendered on the server from plain values: no script, no external resource, every
// interpolated value escaped by the `html` tag. Pure; the routes (page.ts) gather the values.
import type { CoverageReport, ImageCoverage, RuleCoverage, RuleState } from '../jobs/coverage.js';
import type { StatusReport, WindowReport } from '../jobs/status.js';
import type { SyncReport } from '../jobs/sync.js';
import type { DeniedEntry } from '../policy/denied.js';

/** Markup that is already safe; anything else interpolated into `html` is escaped. */
export class Html {
  constructor(readonly text: string) {}
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);

function part(v: unknown): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(part).join('');
  if (v === undefined || v === null || v === false) return '';
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? '';
  values.forEach((v, i) => {
    out += part(v) + (strings[i + 1] ?? '');
  });
  return new Html(out);
}

export interface DeniedRow {
  entry: DeniedEntry;
  /** What was refused, as a reference. */
  reference: string;
  /** The exact rule "allow this" adds; undefined for a refused tags/list (which tag is the operator's choice). */
  rule?: string;
  /** A rule in force allows it now (added since the refusal). */
  allowedNow: boolean;
}

export interface StatusPageModel {
  user: string;
  csrf: string;
  status: StatusReport;
  coverage: CoverageReport;
  denied: DeniedRow[];
  syncs: { running: boolean; recent: SyncReport[] };
  /** A sentence shown at the top (after an action). */
  flash?: string;
}

function layout(title: string, body: Html, header: Html = html``): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="stylesheet" href="/ui/style.css"></head>
<body><header><h1>sluice</h1>${header}</header><main>${body}</main></body></html>
`.text;
}

export function loginPage(message?: string): string {
  return layout('sluice — log in', html`
<section class="login"><h2>Log in</h2>
${message ? html`<p class="error" role="alert">${message}</p>` : ''}
<form method="post" action="/ui/login">
<label>Admin token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<label>Your name <small>(recorded with every change you make)</small> <input type="text" name="user" maxlength="100" autocomplete="username"></label>
<button type="submit">Log in</button>
</form>
<p class="hint">The token is in the file named by <code>admin.tokenFile</code> (default <code>data/admin.token</code>).</p>
</section>`);
}

function logoutForm(user: string, csrf: string): Html {
  return html`<form method="post" action="/ui/logout" class="logout"><span>${user}</span>
<input type="hidden" name="csrf" value="${csrf}"><button type="submit">Log out</button></form>`;
}

export function statusPage(m: StatusPageModel): string {
  const w = m.status.window;
  const header = html`<span class="badge ${w.open ? 'open' : 'closed'}">${w.open ? 'window open' : 'window closed'}</span>${logoutForm(m.user, m.csrf)}`;
  return layout('sluice — status', html`
${m.flash ? html`<p class="flash" role="status">${m.flash}</p>` : ''}
${m.status.allowlistError ? html`<p class="error" role="alert">allowlist file ${m.status.allowlistError.file} is broken (${m.status.allowlistError.message}); the last good rules stay in force</p>` : ''}
${windowSection(w)}
${readinessSection(m.coverage)}
${deniedSection(m.denied)}
${storeSection(m.status)}
${syncSection(m.syncs)}`, header);
}

function windowSection(w: WindowReport): Html {
  const schedule = typeof w.schedule === 'string' ? w.schedule : w.schedule.map((s) => `${s.days.join(',')} ${s.start}–${s.end} ${s.timezone}`).join('; ');
  return html`<section id="window"><h2>Upstream access</h2><dl>
<dt>now</dt><dd>${w.open ? `open${w.until ? ` until ${w.until}` : ''} (${w.source ?? ''})` : 'closed: only what is stored is served'}</dd>
<dt>next window</dt><dd>${w.nextOpen ?? 'none scheduled'}</dd>
<dt>schedule</dt><dd>${schedule}</dd>
${w.manual ? html`<dt>manual window</dt><dd>opened by ${w.manual.who} at ${w.manual.openedAt}: ${w.manual.note}</dd>` : ''}
</dl></section>`;
}

const COLOUR: Record<RuleState, string> = { complete: 'green', incomplete: 'amber', missing: 'red', empty: 'grey' };
const LABEL: Record<RuleState, string> = { complete: 'complete', incomplete: 'incomplete', missing: 'missing', empty: 'matches nothing stored' };
const short = (d: string | null): string => (d ? `${d.slice(0, 19)}…` : '—');

function readinessSection(c: CoverageReport): Html {
  const s = c.summary;
  return html`<section id="readiness"><h2>Readiness <span class="badge ${c.ready ? 'green' : 'red'}">${c.ready ? 'ready to disconnect' : 'not ready'}</span></h2>
<p>${s.rules} rule(s): ${s.complete} complete, ${s.incomplete} incomplete, ${s.missing} missing, ${s.empty} matching nothing. Platforms expected: ${c.platforms === 'all' ? 'every platform of each index' : c.platforms.join(', ')}.</p>
<table><thead><tr><th>rule</th><th>state</th><th>digest</th><th>platforms</th><th>missing</th><th>signatures</th></tr></thead><tbody>
${c.rules.map(ruleRow)}
</tbody></table></section>`;
}

function ruleRow(r: RuleCoverage): Html {
  const one = r.kind === 'tag' || r.kind === 'digest' ? r.images[0] : undefined;
  const state = html`<td class="state"><span class="dot ${COLOUR[r.state]}"></span>${LABEL[r.state]}</td>`;
  if (one) return html`<tr class="${COLOUR[r.state]}" data-rule="${r.rule}"><td><code>${r.rule}</code></td>${state}${imageCells(one)}</tr>`;
  const bad = r.images.filter((i) => i.state !== 'complete');
  const matched = html`<td colspan="4">${r.images.length} image(s) matched${bad.length ? html`; incomplete: ${bad.map((i, k) => html`${k ? ', ' : ''}<code>${i.name}:${i.reference}</code>`)}` : ''}</td>`;
  return html`<tr class="${COLOUR[r.state]}" data-rule="${r.rule}"><td><code>${r.rule}</code></td>${state}${matched}</tr>`;
}

function imageCells(i: ImageCoverage): Html {
  const p = i.platforms;
  const platforms = p ? `${p.present.length}/${p.expected.length}${p.missing.length ? ` (missing ${p.missing.join(', ')})` : ''}${p.notInIndex.length ? ` (not in index: ${p.notInIndex.join(', ')})` : ''}` : i.digest ? 'single' : '—';
  const missing = i.missingManifests.length + i.missingBlobs.length;
  return html`<td><code title="${i.digest ?? ''}">${short(i.digest)}</code></td><td>${platforms}</td>
<td>${missing ? `${i.missingManifests.length} manifest(s), ${i.missingBlobs.length} blob(s)` : i.digest ? 'none' : 'not stored'}</td>
<td>${i.digest ? `${i.signatures.tags.length} tag(s), ${i.signatures.referrers.length} referrer(s)` : '—'}</td>`;
}

function deniedSection(rows: DeniedRow[]): Html {
  const body = rows.length === 0
    ? html`<p>Nothing has been refused.</p>`
    : html`<table><thead><tr><th>refused</th><th>times</th><th>last seen</th><th>client</th><th></th></tr></thead><tbody>
${rows.map((r) => html`<tr><td><code>${r.reference}</code></td><td>${r.entry.count}</td><td>${r.entry.lastSeen}</td><td>${r.entry.client ?? ''}</td><td>${denyAction(r)}</td></tr>`)}
</tbody></table>`;
  return html`<section id="denied"><h2>Denied</h2>${body}</section>`;
}

function denyAction(r: DeniedRow): Html {
  if (r.allowedNow) return html`<span class="badge green">allowed now</span>`;
  if (!r.rule) return html`<small>a tag list: allow a tag with <code>sluice allow add</code></small>`;
  const q = new URLSearchParams({ host: r.entry.host, name: r.entry.name, reference: r.entry.reference });
  return html`<a class="button" href="/ui/allow?${q.toString()}">Allow this…</a>`;
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
function bytes(n: number): string {
  let v = n;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function storeSection(s: StatusReport): Html {
  const st = s.store;
  return html`<section id="store"><h2>Store</h2><dl>
<dt>usage</dt><dd>${bytes(st.sizeBytes)} in ${st.blobs} blob(s)</dd>
<dt>content</dt><dd>${st.repositories} repositories, ${st.tags} tags</dd>
<dt>allowlist</dt><dd>${s.allowlist.rules} rule(s); ${s.denied.entries} refused reference(s)</dd>
<dt>upstreams</dt><dd>${s.upstreams.map((u) => u.host).join(', ')} (default ${s.defaultUpstream})</dd>
</dl></section>`;
}

function syncSection(s: StatusPageModel['syncs']): Html {
  const rows = s.recent.map((r) => html`<tr class="${r.failed.length ? 'red' : 'green'}"><td>${r.finishedAt}</td><td>${r.dryRun ? 'dry run' : ''}</td><td>${r.fetched.length}</td><td>${r.cached.length}</td><td>${r.failed.length}${r.failed.length ? html`<br><small>${r.failed.map((f) => `${f.reference}: ${f.reason}`).join('; ')}</small>` : ''}</td><td>${bytes(r.bytesFetched)}</td></tr>`);
  return html`<section id="syncs"><h2>Recent syncs${s.running ? html` <span class="badge amber">running</span>` : ''}</h2>
${s.recent.length === 0 ? html`<p>No sync since the server started.</p>` : html`<table><thead><tr><th>finished</th><th></th><th>fetched</th><th>cached</th><th>failed</th><th>bytes fetched</th></tr></thead><tbody>${rows}</tbody></table>`}
</section>`;
}

export interface ConfirmModel {
  user: string;
  csrf: string;
  rule: string;
  refused: DeniedEntry;
}

/** The exact rule, shown before anything is written. */
export function confirmPage(m: ConfirmModel): string {
  const pin = m.rule.includes('@');
  return layout('sluice — allow', html`
<section class="confirm"><h2>Allow this image?</h2>
<p>This adds exactly this rule to the allowlist:</p>
<p class="rule"><code id="rule">${m.rule}</code></p>
<p>${pin ? 'It pins this one digest (and what it references).' : 'It allows this tag and the digests it references; no other tag of the repository.'}
Refused ${m.refused.count} time(s), last at ${m.refused.lastSeen}${m.refused.client ? ` from ${m.refused.client}` : ''}. The same as <code>sluice allow add ${m.rule}</code>; recorded as added by <strong>${m.user}</strong>.</p>
<form method="post" action="/ui/allow">
<input type="hidden" name="csrf" value="${m.csrf}"><input type="hidden" name="rule" value="${m.rule}">
<label>Note <input type="text" name="note" maxlength="200" value="allowed from the status page"></label>
<button type="submit" id="allow">Allow ${m.rule}</button> <a href="/ui">Cancel</a>
</form></section>`, logoutForm(m.user, m.csrf));
}

export function messagePage(title: string, message: string): string {
  return layout(`sluice — ${title}`, html`<section><h2>${title}</h2><p class="error" role="alert">${message}</p><p><a href="/ui">Back to the status page</a></p></section>`);
}

export const STYLE = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{display:flex;align-items:center;gap:1em;padding:.6em 1.5em;background:#24292f;color:#fff}
header h1{font-size:1.2em;margin:0}
main{padding:1em 1.5em;max-width:78em}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.4em 1em 1em;margin-bottom:1em}
h2{font-size:1.05em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #eaeef2;vertical-align:top}
code{font:12px ui-monospace,monospace;word-break:break-all}
dl{display:grid;grid-template-columns:9em 1fr;gap:.2em 1em;margin:0}
dt{color:#59636e}
dd{margin:0}
.badge{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.85em;color:#fff;background:#59636e}
.badge.open,.badge.green{background:#1a7f37}.badge.closed{background:#59636e}.badge.amber{background:#9a6700}.badge.red{background:#cf222e}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em;vertical-align:-.05em}
.dot.green{background:#1a7f37}.dot.amber{background:#d4a72c}.dot.red{background:#cf222e}.dot.grey{background:#afb8c1}
td.state{white-space:nowrap}tr.red td.state{color:#cf222e}tr.amber td.state{color:#9a6700}
.logout{margin-left:auto;display:flex;gap:.6em;align-items:center}
button,.button{font:inherit;padding:.25em .8em;border:1px solid #1f883d;border-radius:6px;background:#1f883d;color:#fff;text-decoration:none;cursor:pointer}
.logout button{background:transparent;border-color:#8c959f}
label{display:block;margin:.6em 0}
input[type=text],input[type=password]{display:block;width:28em;max-width:100%;padding:.3em;font:inherit}
.rule code{font-size:1.2em;background:#fff8c5;padding:.2em .4em}
.flash{background:#dafbe1;border:1px solid #1a7f37;padding:.6em 1em;border-radius:6px}
.error{color:#cf222e}
.login{max-width:34em}
`;
