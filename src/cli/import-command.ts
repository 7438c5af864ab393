// `sluice import PATH [--as REF] [--allow]`: imports a layout, bundle or Talos cache into the store, reports
// each image, and with --allow adds rules for what it imported (live through the admin API when a server runs).
import type { Config } from '../config/config.js';
import { importPath, ImportUsageError, parseAsRef, type ImportResult } from '../jobs/importer.js';
import { signatureSubject } from '../policy/allowlist.js';
import { flag, UsageError, type ParsedArgs } from './args.js';
import { addRules, notifyStoreChanged, openStore } from './commands.js';
import { ProgressReporter } from './progress.js';

export async function importCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  const [path, ...extra] = args.positionals;
  if (path === undefined || extra.length > 0) throw new UsageError('import takes exactly one PATH');
  const as = flag(args, 'as');
  try {
    // Checked before the store is opened: a usage error changes nothing.
    if (as !== undefined) parseAsRef(as);
    const cfg = config();
    const store = await openStore(cfg);
    try {
      const progress = new ProgressReporter('import');
      const result = await importPath(store, path, { as, progress: progress.enabled ? progress.update : undefined }).finally(() => progress.done());
      const code = await reportImport(cfg, path, result, args.flags.get('allow') === true);
      await (await import('./sign-command.js')).signImported(cfg, store, result.imported);
      return code;
    } finally {
      await store.close();
    }
  } catch (e) {
    // A problem with --as is the operator's usage (exit 2), whether found before or after reading index.json.
    throw e instanceof ImportUsageError ? new UsageError(e.message) : e;
  }
}

async function reportImport(cfg: Config, path: string, result: ImportResult, allow: boolean): Promise<number> {
  for (const w of result.warnings) process.stderr.write(`warning: ${w}\n`);
  for (const i of result.imported) {
    const host = i.ref.split('/')[0] ?? '';
    if (!cfg.upstreams.has(host) && !cfg.upstreams.has('*')) process.stderr.write(`warning: ${host} is not a configured upstream; ${i.ref} is stored but cannot be served until it is\n`);
    process.stdout.write(`imported ${i.ref} ${i.digest} (${i.blobs} blobs, ${i.bytes} bytes)\n`);
    if (i.missing?.length) process.stdout.write(`  not in the cache (not served; a window fetches them if allowed): ${i.missing.join(', ')}\n`);
  }
  if (result.talosCache) process.stdout.write(`read a Talos image cache (--layout ${result.talosCache}): ${result.imported.length} image(s), ${result.failed.length} failed\n`);
  for (const f of result.failed) process.stderr.write(`failed ${f.ref}: ${f.reason}\n`);
  if (result.imported.length > 0) await notifyStoreChanged(cfg);
  if (allow && result.imported.length > 0) {
    // Through the running server's admin API when there is one, so the rules apply at once. A sluice bundle
    // carries the rules it was exported with; any other layout gets one exact rule per imported reference.
    // Signature tags need no rule of their own: they are allowed with the image they sign.
    const rules = result.bundleRules.length > 0
      ? result.bundleRules
      : result.imported.map((i) => i.ref).filter((ref) => signatureSubject(ref.slice(ref.lastIndexOf(':') + 1)) === undefined || ref.includes('@'));
    const added = await addRules(cfg, rules, `imported from ${path}`);
    process.stdout.write(`allowed ${added.added.length} new rule(s)\n`);
  }
  return result.failed.length > 0 ? 1 : 0;
}

