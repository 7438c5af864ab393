// The operator subcommands `allow`, `denied`, `window`, `status` and `sync`: each talks to the running
// server's admin API so changes apply live, and falls back to the store files when no server answers.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AdminApiError, AdminClient, AdminUnavailableError, currentUser } from './admin-client.js';
import { statusReport, syncClosedMessage, syncPlatforms, windowReport, windowRequest, type StatusReport, type WindowReport } from './admin.js';
import { Allowlist, AllowlistFileError, InvalidRulesError, LockTimeoutError, parseImageList, type AddResult, type RemoveResult, type RuleRecord } from './allowlist.js';
import { flag, UsageError, type ParsedArgs } from './args.js';
import type { Config } from './config.js';
import { DeniedLog, suggestRule, type DeniedEntry } from './denied.js';
import { RegistryError } from './errors.js';
import { Store } from './store.js';
import { SyncClosedError, type SyncEvent, type SyncReport } from './sync.js';
import { WindowState, type ManualWindow } from './window.js';

type Command = (args: ParsedArgs, config: () => Config) => Promise<number>;
type Invalid = Array<{ rule?: string; line?: number; text?: string; reason: string }>;

const out = (s: string): void => void process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
const err = (s: string): void => void process.stderr.write(s.endsWith('\n') ? s : `${s}\n`);
const isJson = (args: ParsedArgs): boolean => args.flags.get('json') === true;

/** Runs `online` against the server; `offline` when none answers (nothing was sent, so nothing applied). */
async function liveOrOffline<T>(cfg: Config, online: (c: AdminClient) => Promise<T>, offline: (why: string) => Promise<T>): Promise<T> {
  try {
    return await online(await AdminClient.fromConfig(cfg));
  } catch (e) {
    if (!(e instanceof AdminUnavailableError)) throw e;
    return offline(e.message);
  }
}

/** Operation failures become a message and exit code 1 (2 for invalid rules); usage errors pass through. */
function guarded(name: string, run: Command): Command {
  return async (args, config) => {
    try {
      return await run(args, config);
    } catch (e) {
      const invalid = invalidOf(e);
      if (invalid) {
        for (const i of invalid) err(i.line !== undefined ? `line ${i.line}: ${JSON.stringify(i.text)}: ${i.reason}` : `invalid rule ${JSON.stringify(i.rule)}: ${i.reason}`);
        err(`sluice ${name}: ${invalid.length} invalid; nothing was changed`);
        return 2;
      }
      if (e instanceof AdminApiError || e instanceof AllowlistFileError || e instanceof LockTimeoutError || e instanceof SyncClosedError) {
        err(`sluice ${name}: ${e.message}`);
        return 1;
      }
      throw e;
    }
  };
}

function invalidOf(e: unknown): Invalid | undefined {
  if (e instanceof InvalidRulesError) return e.errors.map((r) => ({ rule: r.input, reason: r.reason }));
  if (e instanceof AdminApiError && e.status === 400 && typeof e.detail === 'object' && e.detail !== null) {
    const inv = (e.detail as { invalid?: unknown }).invalid;
    if (Array.isArray(inv)) return inv as Invalid;
  }
  return undefined;
}

const allowlistFile = (cfg: Config): string => join(cfg.storage, 'allowlist.json');
const openAllowlist = (cfg: Config): Promise<Allowlist> => Allowlist.open(allowlistFile(cfg), cfg.allowlist);
const offlineNote = (why: string, what: string): void => err(`note: ${why}; ${what}`);

// ---------------------------------------------------------------------------------------------------------------
// allow add|rm|ls|import

export const allowCommand: Command = guarded('allow', async (args, config) => {
  const [sub, ...rest] = args.positionals;
  const cfg = config();
  switch (sub) {
    case 'add':
      if (rest.length === 0) throw new UsageError('allow add needs at least one RULE');
      return printAdded(await addRules(cfg, rest, flag(args, 'note')), args);
    case 'rm':
    case 'remove':
      if (rest.length === 0) throw new UsageError('allow rm needs at least one RULE');
      return printRemoved(await removeRules(cfg, rest), args);
    case 'ls':
    case 'list':
      if (rest.length > 0) throw new UsageError('allow ls takes no arguments');
      return printRules(await listRules(cfg), args);
    case 'import':
      if (rest.length !== 1) throw new UsageError('allow import takes one FILE (or - for standard input)');
      return importList(cfg, rest[0] ?? '-', flag(args, 'note'), args);
    default:
      throw new UsageError(sub === undefined ? 'allow needs a subcommand: add, rm, ls or import' : `unknown allow subcommand "${sub}"`);
  }
});

/** Tells a running server that the store changed under it (after an import); nothing to do without one. */
export function notifyStoreChanged(cfg: Config): Promise<boolean> {
  return liveOrOffline(
    cfg,
    async (c) => (await c.json<{ refreshed: boolean }>('POST', '/api/v1/store/refresh', {})).refreshed,
    async () => false,
  );
}

export function addRules(cfg: Config, rules: string[], note: string | undefined): Promise<AddResult> {
  return liveOrOffline(
    cfg,
    (c) => c.json<AddResult>('POST', '/api/v1/allowlist', { rules, ...(note === undefined ? {} : { note }) }),
    async (why) => {
      offlineNote(why, `editing ${allowlistFile(cfg)} directly`);
      return (await openAllowlist(cfg)).add(rules, { by: currentUser(), note });
    },
  );
}

function removeRules(cfg: Config, rules: string[]): Promise<RemoveResult> {
  return liveOrOffline(
    cfg,
    (c) => c.json<RemoveResult>('DELETE', '/api/v1/allowlist', { rules }),
    async (why) => {
      offlineNote(why, `editing ${allowlistFile(cfg)} directly`);
      return (await openAllowlist(cfg)).remove(rules);
    },
  );
}

function listRules(cfg: Config): Promise<RuleRecord[]> {
  return liveOrOffline(
    cfg,
    async (c) => (await c.json<{ rules: RuleRecord[] }>('GET', '/api/v1/allowlist')).rules,
    async () => (await openAllowlist(cfg)).list(),
  );
}

async function importList(cfg: Config, source: string, note: string | undefined, args: ParsedArgs): Promise<number> {
  const text = source === '-' ? await readStdin() : await readFile(source, 'utf8');
  // Checked here first, so the line numbers refer to the operator's file whichever way it is applied.
  const { rules, errors } = parseImageList(text);
  if (errors.length > 0) {
    for (const e of errors) err(`${source === '-' ? 'stdin' : source}:${e.line}: ${JSON.stringify(e.text)}: ${e.reason}`);
    err(`sluice allow import: ${errors.length} invalid line(s); nothing was added`);
    return 2;
  }
  if (rules.length === 0) {
    err(`sluice allow import: ${source === '-' ? 'standard input' : source} holds no image references`);
    return 2;
  }
  return printAdded(await addRules(cfg, rules, note ?? `imported from ${source === '-' ? 'stdin' : source}`), args);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function printAdded(r: AddResult, args: ParsedArgs): number {
  if (isJson(args)) out(JSON.stringify(r));
  else {
    for (const a of r.added) out(`added ${a.rule}`);
    for (const e of r.existing) out(`already allowed ${e}`);
  }
  return 0;
}

function printRemoved(r: RemoveResult, args: ParsedArgs): number {
  if (isJson(args)) out(JSON.stringify(r));
  else for (const x of r.removed) out(`removed ${x}`);
  for (const m of r.missing) err(`not on the allowlist: ${m}`);
  return r.missing.length > 0 ? 1 : 0;
}

function printRules(rules: RuleRecord[], args: ParsedArgs): number {
  if (isJson(args)) out(JSON.stringify(rules, null, 2));
  else if (rules.length === 0) err('the allowlist is empty: every request is refused');
  else table(['RULE', 'ADDED BY', 'ADDED AT', 'NOTE'], rules.map((r) => [r.rule, r.addedBy, r.addedAt, r.note ?? '']));
  return 0;
}

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  out([head, ...rows].map(line).join('\n'));
}

// ---------------------------------------------------------------------------------------------------------------
// denied [--json] [--format commands] [--clear]

type DeniedRow = DeniedEntry & { command: string };

export const deniedCommand: Command = guarded('denied', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('denied takes no arguments');
  const format = flag(args, 'format') ?? (isJson(args) ? 'json' : 'table');
  if (!['json', 'table', 'commands'].includes(format)) throw new UsageError(`--format must be table, json or commands; got "${format}"`);
  const cfg = config();
  const file = join(cfg.storage, 'denied.json');
  if (args.flags.get('clear') === true) {
    const cleared = await liveOrOffline(
      cfg,
      async (c) => (await c.json<{ cleared: number }>('DELETE', '/api/v1/denied')).cleared,
      async () => {
        const log = await DeniedLog.open(file);
        const n = log.list().length;
        await log.clear();
        await log.close();
        return n;
      },
    );
    out(`cleared ${cleared} denied entr${cleared === 1 ? 'y' : 'ies'}`);
    return 0;
  }
  const entries = await liveOrOffline(
    cfg,
    async (c) => (await c.json<{ entries: DeniedRow[] }>('GET', '/api/v1/denied')).entries,
    async () => (await DeniedLog.open(file)).list().map((e) => ({ ...e, command: suggestRule(e) })),
  );
  if (format === 'json') out(JSON.stringify(entries, null, 2));
  else if (format === 'commands') for (const e of entries) out(e.command);
  else if (entries.length === 0) err('nothing has been denied');
  else {
    const ref = (e: DeniedEntry): string => `${e.host}/${e.name}${e.reference.startsWith('sha256:') ? '@' : ':'}${e.reference}`;
    table(['COUNT', 'LAST SEEN', 'FIRST SEEN', 'CLIENT', 'REFERENCE'], entries.map((e) => [String(e.count), e.lastSeen, e.firstSeen, e.client || '-', ref(e)]));
  }
  return 0;
});

// ---------------------------------------------------------------------------------------------------------------
// window open DURATION --note TEXT | window close

export const windowCommand: Command = guarded('window', async (args, config) => {
  const [sub, ...rest] = args.positionals;
  if (sub !== 'open' && sub !== 'close') throw new UsageError('window needs a subcommand: open DURATION --note TEXT, or close');
  if (sub === 'open' && rest.length !== 1) throw new UsageError('window open takes one DURATION (e.g. 2h, 90m)');
  if (sub === 'close' && rest.length > 0) throw new UsageError('window close takes no arguments');
  const cfg = config();
  const request = sub === 'open' ? usage(() => windowRequest(rest[0], flag(args, 'note'))) : undefined;
  const report = await liveOrOffline(
    cfg,
    async (c) => {
      const body = request ? { duration: rest[0], note: request.note } : undefined;
      return (await c.json<{ window: WindowReport }>(request ? 'POST' : 'DELETE', '/api/v1/window', body)).window;
    },
    async (why) => {
      offlineNote(why, 'recording the window in the store; a server started later and `sluice sync` honour it');
      const state = await offlineWindow(cfg);
      if (request) state.open(request.durationMs, request.note, currentUser());
      else state.close();
      await saveWindow(cfg, state.manual());
      return windowReport(state);
    },
  );
  if (isJson(args)) out(JSON.stringify(report, null, 2));
  else out(describeWindow(report));
  return 0;
});

/** A validation failure of operator input is a usage error (exit 2). */
function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RegistryError) throw new UsageError(e.message);
    throw e;
  }
}

/** The schedule from the config plus the manual window persisted beside the store (as the server keeps it). */
async function offlineWindow(cfg: Config): Promise<WindowState> {
  const state = new WindowState(cfg.windows);
  const text = await readFile(join(cfg.storage, 'window.json'), 'utf8').catch(() => 'null');
  try {
    state.restore(JSON.parse(text) as ManualWindow | null);
  } catch {
    state.restore(null);
  }
  return state;
}

async function saveWindow(cfg: Config, manual: ManualWindow | null): Promise<void> {
  const file = join(cfg.storage, 'window.json');
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(manual));
  await rename(tmp, file);
}

function describeWindow(w: WindowReport): string {
  const manual = w.manual ? ` (manual window opened by ${w.manual.who} at ${w.manual.openedAt}: ${w.manual.note})` : '';
  if (!w.open) return `upstream access is closed; ${w.nextOpen ? `next window opens ${w.nextOpen}` : 'no window is scheduled'}`;
  if (w.source === 'always') return `upstream access is open (windows: always)${manual}`;
  const next = w.nextOpen ? `; next window opens ${w.nextOpen}` : '';
  return `upstream access is open until ${w.until ?? 'further notice'} (by ${w.source})${manual}${next}`;
}

// ---------------------------------------------------------------------------------------------------------------
// status [--json]

export const statusCommand: Command = guarded('status', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('status takes no arguments');
  const cfg = config();
  let url = '';
  const report = await liveOrOffline(
    cfg,
    async (c) => {
      const r = await c.json<StatusReport>('GET', '/api/v1/status');
      url = c.baseUrl;
      return r;
    },
    async () => {
      const [window, store, allowlist, denied] = await Promise.all([
        offlineWindow(cfg), Store.open(cfg.storage), openAllowlist(cfg), DeniedLog.open(join(cfg.storage, 'denied.json')),
      ]);
      return statusReport({ config: cfg, window, store, allowlist, denied });
    },
  );
  const server = { running: url !== '', url: url || null };
  if (isJson(args)) {
    out(JSON.stringify({ ...report, server }, null, 2));
    return 0;
  }
  const s = report.store;
  const last = report.sync.last as SyncReport | null;
  out([
    describeWindow(report.window),
    `schedule:   ${typeof report.window.schedule === 'string' ? report.window.schedule : report.window.schedule.map((w) => `${w.days.join(',')} ${w.start}-${w.end} ${w.timezone}`).join('; ')}`,
    `allowlist:  ${report.allowlist.rules} rule(s); denied log: ${report.denied.entries} reference(s)`,
    `store:      ${s.repositories} repositories, ${s.tags} tags, ${s.blobs} blobs (${formatBytes(s.sizeBytes)})`,
    `upstreams:  ${report.upstreams.map((u) => u.host).join(', ')} (default ${report.defaultUpstream})`,
    `last sync:  ${last ? `${last.finishedAt}: ${last.fetched.length} fetched, ${last.cached.length} already cached, ${last.failed.length} failed` : report.sync.running ? 'running' : 'none since the server started'}`,
    `server:     ${url ? `running (admin API ${url})` : `not running (read from ${cfg.storage})`}`,
  ].join('\n'));
  return 0;
});

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

// ---------------------------------------------------------------------------------------------------------------
// sync [--dry-run] [--platform os/arch,...]

export const syncCommand: Command = guarded('sync', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('sync takes no arguments');
  const dryRun = args.flags.get('dry-run') === true;
  const platforms = usage(() => syncPlatforms(flag(args, 'platform')));
  const cfg = config();
  const progress = new SyncProgress(process.stderr.isTTY === true);
  const report = await liveOrOffline(
    cfg,
    async (c) => {
      let summary: SyncReport | undefined;
      await c.stream('/api/v1/sync', { dryRun, ...(platforms ? { platforms } : {}) }, (line) => {
        const l = line as SyncEvent | { type: 'summary'; report: SyncReport } | { type: 'error' | 'info'; message: string };
        if (l.type === 'summary') summary = l.report;
        else if (l.type === 'error') throw new AdminApiError(500, l.message, null);
        else if (l.type === 'info') err(l.message);
        else if (l.type === 'plan' || l.type === 'reference' || l.type === 'blob') progress.event(l);
      });
      if (!summary) throw new AdminApiError(500, 'the server ended the sync stream without a summary', null);
      return summary;
    },
    async (why) => {
      offlineNote(why, 'syncing in this process');
      // Loaded here only: the whole server graph would add a few hundred ms to every other command's start.
      const { buildApp } = await import('./app.js');
      const app = await buildApp(cfg);
      try {
        if (!dryRun && !app.mirror.isWindowOpen()) throw new SyncClosedError(syncClosedMessage(app.mirror.closedUntil()));
        return await app.syncer.run({ dryRun, platforms, onEvent: (e) => progress.event(e) });
      } finally {
        await app.close();
      }
    },
  ).finally(() => progress.done());
  printSyncReport(report, args);
  return report.failed.length > 0 ? 1 : 0;
});

function printSyncReport(r: SyncReport, args: ParsedArgs): void {
  if (isJson(args)) {
    out(JSON.stringify(r, null, 2));
    return;
  }
  for (const p of r.planned) out(`would fetch     ${p}`);
  for (const f of r.fetched) out(`fetched         ${f}`);
  for (const c of r.cached) out(`already cached  ${c}`);
  for (const f of r.failed) out(`failed          ${f.reference}: ${f.reason}`);
  if (r.dryRun) out(`dry run: ${r.planned.length} reference(s) would be synced`);
  else out(`sync finished: ${r.fetched.length} fetched (${formatBytes(r.bytesFetched)}), ${r.cached.length} already cached, ${r.failed.length} failed`);
}

/** A one-line progress bar on a terminal's stderr; silent otherwise (the summary goes to stdout). */
class SyncProgress {
  private total = 0;
  private doneRefs = 0;
  private bytes = 0;
  private current = '';

  constructor(private readonly tty: boolean) {}

  event(e: SyncEvent): void {
    if (e.type === 'plan') this.total = e.references.length;
    else if (e.type === 'reference') this.doneRefs++;
    else {
      this.bytes += e.sizeBytes;
      this.current = e.reference;
    }
    this.draw();
  }

  done(): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
  }

  private draw(): void {
    if (!this.tty) return;
    const width = 24;
    const filled = this.total > 0 ? Math.round((this.doneRefs / this.total) * width) : 0;
    const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
    const cols = process.stderr.columns || 80;
    const line = `[${bar}] ${this.doneRefs}/${this.total} ${formatBytes(this.bytes)} ${this.current}`;
    process.stderr.write(`\r\x1b[K${line.slice(0, cols - 1)}`);
  }
}
