// The `sluice` subcommands: parse, load the config, run, and return the exit code (0 ok, 1 failed,
// 2 usage or config error). main.ts is the only place that exits.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flag, locate, parseInvocation, usageText, UsageError, type CommandSpec, type ParsedArgs } from './args.js';
import type { App } from '../app.js';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { importPath, ImportUsageError, parseAsRef, type ImportResult } from '../jobs/importer.js';
import { Store } from '../store/store.js';
import { AllowlistFileError, signatureSubject } from '../policy/allowlist.js';
import { addRules, allowCommand, notifyStoreChanged, deniedCommand, type Command, openStore } from './commands.js';
import { statusCommand, syncCommand, windowCommand } from './window-commands.js';
import { verifyStore } from '../jobs/verify.js';
import { gcCommand } from './gc-command.js';
import { exportCommand } from './export-command.js';
import { versionCommand } from './version-command.js';

/** Every command: its usage line (which is also the options it takes), what it does, and what runs it. */
const COMMANDS: Readonly<Record<string, CommandSpec & { run: Command }>> = {
  serve: { summary: 'run the registry mirror (and its admin API)', run: serve },
  import: { usage: 'PATH [--as REF] [--allow]', summary: 'import an OCI image layout, an export bundle (directory, .tar or .tar.zst) or a Talos image cache', run: importCommand },
  export: {
    usage: 'OUT [RULE...] [--since RECEIPT] [--platform os/arch,...] [--format dir|tar|tar.zst|talos-cache-flat|talos-cache-oci] [--partial] [--json]',
    summary: 'write stored images as an OCI image layout bundle or a Talos image cache, with a receipt beside it',
    run: exportCommand,
  },
  allow: {
    summary: 'edit the allowlist',
    run: allowCommand,
    subcommands: {
      add: { usage: 'RULE... [--note TEXT] [--json]', summary: 'allow images (HOST/NAME[:TAG] or HOST/NAME@sha256:HEX, * and ** globs)' },
      rm: { usage: 'RULE... [--json]', summary: 'remove rules', aliases: ['remove'] },
      ls: { usage: '[--json]', summary: 'list the rules', aliases: ['list'] },
      import: { usage: 'FILE|- [--note TEXT] [--json]', summary: 'allow every reference in an image list (e.g. talosctl images default)' },
    },
  },
  denied: { usage: '[--json|--format commands] [--clear]', summary: 'what was refused, as a table, JSON or `sluice allow add` lines', run: deniedCommand },
  window: {
    summary: 'upstream access now',
    run: windowCommand,
    subcommands: {
      open: { usage: 'DURATION --note TEXT [--json]', summary: 'open upstream access now for DURATION (e.g. 2h)' },
      close: { usage: '[--json]', summary: 'end the manual window' },
    },
  },
  status: { usage: '[--coverage] [--json]', summary: 'upstream access, next window, store and allowlist counts, last sync; --coverage: what is stored for every rule (exit 1 if incomplete)', run: statusCommand },
  sync: { usage: '[--dry-run] [--platform os/arch,...] [--json]', summary: 'fetch every exact allowlisted reference (needs an open window)', run: syncCommand },
  talos: {
    summary: 'Talos node configuration',
    // Loaded when used: the other commands start without bcrypt and the YAML writer.
    run: async (args, config) => (await import('./talos-command.js')).talosCommand(args, config),
    subcommands: {
      patch: {
        usage: '[--form legacy|documents] [--endpoint URL] [--ca FILE] [--client-cert FILE --client-key FILE] [--username USER --password-file FILE] [--verify]',
        summary: "print the machine-config patch pointing every registry ('*') at this mirror; --verify adds the ImageVerificationConfig requiring the site signature",
      },
    },
  },
  sign: {
    usage: '[RULE...] [--json]',
    summary: 'sign the stored images of these allowlist rules (default: all) with the site key, as signing.policy decides',
    run: async (args, config) => (await import('./sign-command.js')).signCommand(args, config),
  },
  signing: {
    summary: 'the site signing key',
    run: async (args, config) => (await import('./signing-command.js')).signingCommand(args, config),
    subcommands: {
      init: { usage: '[--key FILE]', summary: 'write a new ECDSA P-256 site key (mode 0600) and FILE.pub; prints the public key' },
    },
  },
  gc: { usage: '[--dry-run] [--json]', summary: 'remove blobs no allowlist rule keeps (see gc.keep, gcGrace); --dry-run lists them', run: gcCommand },
  verify: { usage: '[--repair] [--json]', summary: 're-hash every blob; --repair quarantines corrupt ones so they are refetched', run: verifyCommand },
  version: { usage: '[--json]', summary: 'this release, its source revision, the Node.js runtime and the store format (also --version)', run: versionCommand },
};

export const DEFAULT_CONFIG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'config', 'sluice.yaml');

/** How long SIGTERM waits for in-flight downloads before closing their connections. */
const SHUTDOWN_GRACE_MS = Number(process.env.SLUICE_SHUTDOWN_GRACE_MS ?? 30_000);

export async function runCli(argv: string[]): Promise<number> {
  const inv = locate(COMMANDS, argv[0] === '--version' ? ['version', ...argv.slice(1)] : argv);
  if (!inv) {
    process.stderr.write(`${usageText(COMMANDS, [])}\n`);
    return 2;
  }
  const [name = ''] = inv.path;
  const command = COMMANDS[name];
  if (inv.path.length > 0 && !command) {
    process.stderr.write(`sluice: unknown command "${name}"\n${usageText(COMMANDS, [])}\n`);
    return 2;
  }
  // Help is answered before anything is parsed, loaded or run: `sync --help` never syncs.
  if (inv.help || !command) {
    process.stdout.write(`${usageText(COMMANDS, inv.path)}\n`);
    return 0;
  }
  try {
    const args = parseInvocation(COMMANDS, inv);
    const file = flag(args, 'config') ?? process.env.SLUICE_CONFIG ?? DEFAULT_CONFIG;
    return await command.run(args, () => loadConfig(file));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`sluice ${inv.path.join(' ')}: ${e.message}\n${usageText(COMMANDS, inv.path)}\n`);
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
  const { buildApp, reloadListeners } = await import('../app.js');
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
  // `on`, not `once`: a second SIGTERM during the graceful stop (a supervisor repeating itself) must not kill the
  // process mid-drain through the default action; the grace deadline bounds the stop instead.
  const stopping = new Promise<void>((resolveStop) => {
    process.on('SIGTERM', resolveStop);
    process.on('SIGINT', resolveStop);
  });
  await stopping;
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
    app.metricsListener?.server.closeAllConnections();
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
    if (app.metricsListener && app.config.metrics) {
      const m = app.config.metrics.listen;
      const metricsAddress = await app.metricsListener.listen({ host: m.host, port: m.port });
      app.registry.log.info({ address: metricsAddress }, 'metrics listening (GET /metrics, no token)');
    }
  } catch (e) {
    await app.close();
    throw e;
  }
}

async function importCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  const [path, ...extra] = args.positionals;
  if (path === undefined || extra.length > 0) throw new UsageError('import takes exactly one PATH');
  const as = flag(args, 'as');
  try {
    // Checked before the store is opened: a usage error changes nothing.
    if (as !== undefined) parseAsRef(as);
    const cfg = config();
    const store = await openStore(cfg);
    try {
      const tty = process.stderr.isTTY;
      const progress = tty ? (line: string): void => void process.stderr.write(`\r\x1b[K${line}`) : undefined;
      const result = await importPath(store, path, { as, progress }).finally(() => tty && process.stderr.write('\r\x1b[K'));
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

async function verifyCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('verify takes no arguments');
  const store = await openStore(config());
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
