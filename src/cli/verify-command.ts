// `sluice verify [--repair] [--json]`: re-hashes every blob, lists corrupt blobs, dangling tags and incomplete
// manifests; exit 1 while corrupt blobs (unrepaired) or dangling tags remain.
import type { Config } from '../config/config.js';
import { verifyStore } from '../jobs/verify.js';
import { UsageError, type ParsedArgs } from './args.js';
import { notifyStoreChanged, openStore } from './commands.js';
import { ProgressReporter } from './progress.js';

export async function verifyCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('verify takes no arguments');
  const store = await openStore(config());
  const repair = args.flags.get('repair') === true;
  const json = args.flags.get('json') === true;
  const progress = new ProgressReporter('verify', process.stderr, { quiet: json });
  const report = await verifyStore(store, { repair, onProgress: progress.enabled ? progress.update : undefined }).finally(() => progress.done());
  await store.close();
  // A running server may hold a quarantined blob in memory: have it forget what it memoised.
  if (report.corrupt.some((c) => c.quarantinedTo)) await notifyStoreChanged(config());
  if (json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(`checked ${report.blobsChecked} blobs (${report.bytesChecked} bytes)\n`);
    for (const c of report.corrupt) {
      process.stdout.write(`CORRUPT ${c.digest}: content hashes to ${c.computed}${c.quarantinedTo ? `; quarantined to ${c.quarantinedTo}` : ''}\n`);
    }
    for (const t of report.danglingTags) process.stdout.write(`DANGLING TAG ${t.host}/${t.name}:${t.tag} -> ${t.digest || '(unreadable)'} (manifest absent)\n`);
    for (const i of report.incomplete) process.stdout.write(`incomplete ${i.host}/${i.name}@${i.manifest}: ${i.missing.length} blob(s) not cached\n`);
    if (report.corrupt.length > 0 && !repair) {
      process.stdout.write('run `sluice verify --repair` to quarantine corrupt blobs; they are refetched on the next allowed request in a window\n');
    }
  }
  const unrepaired = repair ? 0 : report.corrupt.length;
  return unrepaired + report.danglingTags.length > 0 ? 1 : 0;
}
