// `sluice gc [--dry-run] [--json]`: through the running server's admin API (it keeps serving meanwhile), or in
// this process on the store when no server answers. Prints what went (or would go) and how many bytes.
import { Allowlist } from '../policy/allowlist.js';
import { collectGarbage, type GcReport } from '../jobs/gc.js';
import { openStateDocuments } from '../store/open.js';
import { UsageError } from './args.js';
import { guarded, isJson, liveOrOffline, notifyStoreChanged, offlineNote, out, type Command, openStore } from './commands.js';
import { formatBytes } from './commands.js';
import { ProgressReporter } from './progress.js';

/** A gc of a very large store takes a while; the CLI waits for it rather than give up after a minute. */
const GC_TIMEOUT_MS = 6 * 3600 * 1000;

export const gcCommand: Command = guarded('gc', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('gc takes no arguments');
  const dryRun = args.flags.get('dry-run') === true;
  const cfg = config();
  const progress = new ProgressReporter('gc', process.stderr, { quiet: isJson(args) });
  const report = await liveOrOffline(
    cfg,
    (c) => onServer(progress, () => c.json<GcReport>('POST', '/api/v1/gc', { dryRun }, GC_TIMEOUT_MS)),
    async (why) => {
      offlineNote(why, 'collecting garbage in this process');
      const store = await openStore(cfg);
      try {
        const allowlist = await Allowlist.open((await openStateDocuments(cfg)).allowlist, cfg.allowlist);
        return await collectGarbage(store, allowlist, { dryRun, keep: cfg.gc.keep, graceMs: cfg.gcGraceMs, onProgress: progress.enabled ? progress.update : undefined });
      } finally {
        await store.close();
      }
    },
  ).finally(() => progress.done());
  if (!dryRun && report.swept.length > 0) await notifyStoreChanged(cfg).catch(() => false);
  if (isJson(args)) out(JSON.stringify(report, null, 2));
  else printReport(report);
  return 0;
});

function printReport(r: GcReport): void {
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const b of r.swept) out(`${verb} ${b.digest} (${formatBytes(b.sizeBytes)})`);
  for (const t of r.tagsRemoved) out(`removed tag ${t}`);
  const spared = r.spared > 0 ? `; ${r.spared} unused blob(s) spared: committed or read within gcGrace` : '';
  const what = `${r.swept.length} blob(s), ${formatBytes(r.sweptBytes)} (${r.sweptBytes} bytes)`;
  out(r.dryRun ? `dry run: ${what} would be removed; ${r.marked} digest(s) kept by the allowlist${spared}` : `gc finished: ${what} removed; ${r.marked} digest(s) kept by the allowlist${spared}`);
}

/** The server reports nothing until it is done: a line with the time so far, redrawn each second. */
async function onServer<T>(progress: ProgressReporter, request: () => Promise<T>): Promise<T> {
  const tick = (): void => progress.update({ unit: '', done: 0, bytesDone: 0, current: 'running on the server' });
  tick();
  const timer = progress.enabled ? setInterval(tick, 1000) : undefined;
  try {
    return await request();
  } finally {
    clearInterval(timer);
  }
}
