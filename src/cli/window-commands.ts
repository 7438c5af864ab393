// The operator subcommands about upstream access: `window`, `status` and `sync`. Live through the admin API;
// without a server they read and write window.json beside the store (and a sync runs in this process).
import { AdminApiError, currentUser } from './admin-client.js';
import { statusReport, windowReport, type StatusReport, type WindowReport } from '../jobs/status.js';
import { syncClosedMessage, syncPlatforms } from '../admin/sync.js';
import { windowRequest } from '../admin/window.js';
import { flag, UsageError, type ParsedArgs } from './args.js';
import { allowlistWarning, err, formatBytes, guarded, isJson, liveOrOffline, offlineNote, openAllowlist, openDenied, out, type Command, openStore } from './commands.js';
import type { Config } from '../config/config.js';
import { RegistryError } from '../oci/errors.js';
import { coverageCommand } from './coverage-command.js';
import { openStateDocuments, withEditableStateDocuments } from '../store/open.js';
import { SyncClosedError, type SyncEvent, type SyncReport } from '../jobs/sync.js';
import { WindowState } from '../window/state.js';
import { restoreManual } from '../window/manual-store.js';
import { windowClosedUntil } from '../mirror/access.js';
import type { JobProgress } from '../jobs/progress.js';
import { ProgressReporter } from './progress.js';

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
      await withEditableStateDocuments(cfg, (docs) => docs.window.write(state.manual()));
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
  await restoreManual(state, (await openStateDocuments(cfg)).window);
  return state;
}

function describeWindow(w: WindowReport): string {
  const manual = w.manual ? ` (manual window opened by ${w.manual.who} at ${w.manual.openedAt}: ${w.manual.note})` : '';
  if (!w.open) return `upstream access is closed; ${w.nextOpen ? `next window opens ${w.nextOpen}` : 'no window is scheduled'}`;
  if (w.source === 'always') return `upstream access is open (windows: always)${manual}`;
  const next = w.nextOpen ? `; next window opens ${w.nextOpen}` : '';
  return `upstream access is open until ${w.until ?? 'further notice'} (by ${w.source})${manual}${next}`;
}

// ---------------------------------------------------------------------------------------------------------------
// status [--coverage] [--json]

export const statusCommand: Command = guarded('status', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('status takes no arguments');
  const cfg = config();
  if (args.flags.get('coverage') === true) return coverageCommand(args, cfg);
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
        offlineWindow(cfg), openStore(cfg), openAllowlist(cfg), openDenied(cfg),
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
  const shared = report.sharedState;
  out([
    ...(shared && !shared.confirmed ? [`warning:    upstream access is closed and nothing is served on this replica: ${shared.reason ?? ''}`] : []),
    describeWindow(report.window),
    `schedule:   ${typeof report.window.schedule === 'string' ? report.window.schedule : report.window.schedule.map((w) => `${w.days.join(',')} ${w.start}-${w.end} ${w.timezone}`).join('; ')}`,
    `allowlist:  ${report.allowlist.rules} rule(s); denied log: ${report.denied.entries} reference(s)`,
    ...(report.allowlistError ? [allowlistWarning(report.allowlistError)] : []),
    ...(report.storeError ? [`warning:    the store cannot be counted: ${report.storeError}`] : []),
    `store:      ${s.repositories} repositories, ${s.tags} tags, ${s.blobs} blobs (${formatBytes(s.sizeBytes)}${s.maxBytes ? ` of ${formatBytes(s.maxBytes)} storage.maxBytes` : ''})`,
    ...(s.full ? ['warning: the store has reached storage.maxBytes: new downloads are refused (507) until `sluice gc` frees space or the limit is raised'] : []),
    `upstreams:  ${report.upstreams.map((u) => u.host).join(', ')} (default ${report.defaultUpstream})`,
    `last sync:  ${last ? `${last.finishedAt}: ${last.fetched.length} fetched, ${last.cached.length} already cached, ${last.failed.length} failed` : report.sync.running ? 'running' : 'none since the server started'}`,
    ...(report.movedPins ?? []).map((m) => `moved pin:  ${m.rule}: upstream ${m.tag} is now ${m.upstream} (the pin still serves)`),
    `server:     ${url ? `running (admin API ${url})` : `not running (read from ${cfg.storage})`}`,
  ].join('\n'));
  return 0;
});


// ---------------------------------------------------------------------------------------------------------------
// sync [--dry-run] [--platform os/arch,...]

export const syncCommand: Command = guarded('sync', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('sync takes no arguments');
  const dryRun = args.flags.get('dry-run') === true;
  const platforms = usage(() => syncPlatforms(flag(args, 'platform')));
  const cfg = config();
  const progress = new ProgressReporter('sync', process.stderr, { quiet: isJson(args) });
  const onEvent = syncProgress(progress);
  const report = await liveOrOffline(
    cfg,
    async (c) => {
      let summary: SyncReport | undefined;
      await c.stream('/api/v1/sync', { dryRun, ...(platforms ? { platforms } : {}) }, (line) => {
        const l = line as SyncEvent | { type: 'summary'; report: SyncReport } | { type: 'error' | 'info'; message: string };
        if (l.type === 'summary') summary = l.report;
        else if (l.type === 'error') throw new AdminApiError(500, l.message, null);
        else if (l.type === 'info') err(l.message);
        else if (l.type === 'plan' || l.type === 'reference' || l.type === 'blob' || l.type === 'moved') onEvent(l);
      });
      if (!summary) throw new AdminApiError(500, 'the server ended the sync stream without a summary', null);
      return summary;
    },
    async (why) => {
      offlineNote(why, 'syncing in this process');
      // Loaded here only: the whole server graph would add a few hundred ms to every other command's start.
      const { buildApp } = await import('../app.js');
      const app = await buildApp(cfg);
      try {
        if (!dryRun && !app.window.isOpen()) throw new SyncClosedError(syncClosedMessage(windowClosedUntil(app.window)));
        return await app.syncer.run({ dryRun, platforms, onEvent });
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
  for (const m of r.moved ?? []) out(`moved pin       ${m.rule}: upstream ${m.tag} is now ${m.upstream} (the pin still serves)`);
  for (const u of r.signing?.unsigned ?? []) out(`not site-signed ${u.reference} ${u.digest}: ${u.reason}`);
  if (r.signing) out(`site signatures: ${r.signing.signed} made, ${r.signing.kept} kept, ${r.signing.unsigned.length} manifest(s) left unsigned`);
  if (r.dryRun) out(`dry run: ${r.planned.length} reference(s) would be synced`);
  else out(`sync finished: ${r.fetched.length} fetched (${formatBytes(r.bytesFetched)}), ${r.cached.length} already cached, ${r.failed.length} failed`);
}

/** Sync events as progress: references done of those planned, bytes fetched, the reference being fetched. */
function syncProgress(reporter: ProgressReporter): (e: SyncEvent) => void {
  const p: JobProgress = { unit: 'references', done: 0, total: 0, bytesDone: 0 };
  return (e) => {
    if (e.type === 'plan') p.total = e.references.length;
    else if (e.type === 'reference') p.done++;
    else if (e.type === 'blob') {
      if (!e.cached) p.bytesDone += e.sizeBytes;
      p.current = e.reference;
    }
    reporter.update({ ...p });
  };
}
