// The `sluice` subcommands: parse, load the config, run, and return the exit code (0 ok, 1 failed,
// 2 usage or config error). main.ts is the only place that exits.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, flag, UsageError, type ParsedArgs } from './args.js';
import type { App } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { importPath } from './importer.js';
import { Store } from './store.js';
import { AllowlistFileError } from './allowlist.js';
import { addRules, allowCommand, notifyStoreChanged, deniedCommand } from './commands.js';
import { statusCommand, syncCommand, windowCommand } from './window-commands.js';
import { verifyStore } from './verify.js';

const USAGE = `usage: sluice <command> [options]
  serve                          run the registry mirror (and its admin API)
  import PATH [--as REF] [--allow]  import an OCI image layout (directory or .tar)
  allow add RULE... [--note TEXT]     allow images (HOST/NAME[:TAG] or HOST/NAME@sha256:HEX, * and ** globs)
  allow rm RULE...                    remove rules
  allow ls [--json]                   list the rules
  allow import FILE|- [--note TEXT]   allow every reference in an image list (e.g. talosctl images default)
  denied [--json|--format commands] [--clear]  what was refused, as a table, JSON or \`sluice allow add\` lines
  window open DURATION --note TEXT    open upstream access now for DURATION (e.g. 2h); window close ends it
  status [--json]                     upstream access, next window, store and allowlist counts, last sync
  sync [--dry-run] [--platform os/arch,...]  fetch every exact allowlisted reference (needs an open window)
  verify [--repair] [--json]          re-hash every blob; --repair quarantines corrupt ones so they are refetched
common options: --config FILE (or SLUICE_CONFIG), --json where output is tabular`;

const VALUED = ['config', 'as', 'note', 'platform', 'format'];
const BOOLEANS = ['json', 'allow', 'dry-run', 'repair', 'help', 'clear'];

export const DEFAULT_CONFIG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'config', 'sluice.yaml');

type Command = (args: ParsedArgs, config: () => Config) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  serve,
  import: importCommand,
  allow: allowCommand,
  denied: deniedCommand,
  window: windowCommand,
  status: statusCommand,
  sync: syncCommand,
  verify: verifyCommand,
};

/** How long SIGTERM waits for in-flight downloads before closing their connections. */
const SHUTDOWN_GRACE_MS = Number(process.env.SLUICE_SHUTDOWN_GRACE_MS ?? 30_000);

export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`sluice: unknown command "${name}"\n${USAGE}\n`);
    return 2;
  }
  try {
    const args = parseArgs(rest, VALUED, BOOLEANS);
    const file = flag(args, 'config') ?? process.env.SLUICE_CONFIG ?? DEFAULT_CONFIG;
    return await command(args, () => loadConfig(file));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`sluice ${name}: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    if (e instanceof ConfigError || e instanceof AllowlistFileError) {
      process.stderr.write(`sluice: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

async function serve(args: ParsedArgs, config: () => Config): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('serve takes no arguments');
  // Loaded here so that the other subcommands start without fastify and friends.
  const { buildApp, reloadListeners } = await import('./app.js');
  const app = await buildApp(config(), { logger: true });
  await listen(app);
  const reload = (): void => {
    try {
      reloadListeners(app);
      app.registry.log.info('TLS certificates reloaded');
    } catch (e) {
      app.registry.log.error({ err: e }, 'TLS reload failed; keeping the previous certificates');
    }
  };
  process.on('SIGHUP', reload);
  await new Promise<void>((resolveStop) => {
    process.once('SIGTERM', () => resolveStop());
    process.once('SIGINT', () => resolveStop());
  });
  process.off('SIGHUP', reload);
  await shutdown(app);
  return 0;
}

/**
 * Graceful stop within SLUICE_SHUTDOWN_GRACE_MS: no new connections; in-flight requests and detached blob
 * downloads may finish until the deadline, then connections are cut and downloads cancelled (nothing committed).
 */
async function shutdown(app: App): Promise<void> {
  app.registry.log.info({ graceMs: SHUTDOWN_GRACE_MS }, 'shutting down: finishing in-flight requests');
  const deadlineMs = Date.now() + SHUTDOWN_GRACE_MS;
  const cut = setTimeout(() => {
    app.registry.log.warn('grace period over: closing remaining connections and cancelling downloads');
    app.registry.server.closeAllConnections();
    app.admin.server.closeAllConnections();
  }, SHUTDOWN_GRACE_MS);
  cut.unref();
  await app.close(deadlineMs);
  clearTimeout(cut);
}

/** Both listeners or neither: if one cannot listen (port in use), the other is closed so the process can exit. */
async function listen(app: App): Promise<void> {
  try {
    const { host, port } = app.config.listen;
    const address = await app.registry.listen({ host, port });
    app.registry.log.info({ address }, 'registry listening');
    const admin = app.config.admin.listen;
    const adminAddress = await app.admin.listen({ host: admin.host, port: admin.port });
    app.registry.log.info({ address: adminAddress }, 'admin API listening');
  } catch (e) {
    await app.close();
    throw e;
  }
}

async function importCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  const [path, ...extra] = args.positionals;
  if (path === undefined || extra.length > 0) throw new UsageError('import takes exactly one PATH');
  const cfg = config();
  const store = await Store.open(cfg.storage);
  const tty = process.stderr.isTTY;
  const result = await importPath(store, path, {
    as: flag(args, 'as'),
    progress: tty ? (line) => process.stderr.write(`\r\x1b[K${line}`) : undefined,
  });
  if (tty) process.stderr.write('\r\x1b[K');
  for (const i of result.imported) {
    const host = i.ref.split('/')[0] ?? '';
    if (!cfg.upstreams.has(host)) process.stderr.write(`warning: ${host} is not a configured upstream; ${i.ref} is stored but cannot be served until it is\n`);
    process.stdout.write(`imported ${i.ref} ${i.digest} (${i.blobs} blobs, ${i.bytes} bytes)\n`);
  }
  for (const f of result.failed) process.stderr.write(`failed ${f.ref}: ${f.reason}\n`);
  if (result.imported.length > 0) await notifyStoreChanged(cfg);
  if (args.flags.get('allow') === true && result.imported.length > 0) {
    // Through the running server's admin API when there is one, so the rules apply at once.
    const added = await addRules(cfg, result.imported.map((i) => i.ref), `imported from ${path}`);
    process.stdout.write(`allowed ${added.added.length} new rule(s)\n`);
  }
  await store.close();
  return result.failed.length > 0 ? 1 : 0;
}

async function verifyCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('verify takes no arguments');
  const store = await Store.open(config().storage);
  const repair = args.flags.get('repair') === true;
  const json = args.flags.get('json') === true;
  const tty = process.stderr.isTTY && !json;
  const report = await verifyStore(store, { repair, onProgress: tty ? (n) => process.stderr.write(`\r\x1b[Kverified ${n} blobs`) : undefined });
  if (tty) process.stderr.write('\r\x1b[K');
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
