// The `sluice` subcommands: parse, load the config, run, and return the exit code (0 ok, 1 failed,
// 2 usage or config error). main.ts is the only place that exits.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, flag, UsageError, type ParsedArgs } from './args.js';
import { buildApp, type App } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { importPath } from './importer.js';
import { Store } from './store.js';
import { Allowlist } from './allowlist.js';
import { join } from 'node:path';

const USAGE = `usage: sluice <command> [options]
  serve                          run the registry mirror (and its admin API)
  import PATH [--as REF] [--allow]  import an OCI image layout (directory or .tar)
common options: --config FILE (or SLUICE_CONFIG), --json where output is tabular`;

const VALUED = ['config', 'as', 'note', 'platform'];
const BOOLEANS = ['json', 'allow', 'dry-run', 'repair', 'help'];

export const DEFAULT_CONFIG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'config', 'sluice.yaml');

type Command = (args: ParsedArgs, config: () => Config) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  serve,
  import: importCommand,
};

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
    if (e instanceof ConfigError) {
      process.stderr.write(`sluice: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

async function serve(args: ParsedArgs, config: () => Config): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('serve takes no arguments');
  const app = await buildApp(config(), { logger: true });
  await listen(app);
  await new Promise<void>((resolveStop) => {
    const stop = (): void => resolveStop();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await app.close();
  return 0;
}

async function listen(app: App): Promise<void> {
  const { host, port } = app.config.listen;
  const address = await app.registry.listen({ host, port });
  app.registry.log.info({ address }, 'registry listening');
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
  if (args.flags.get('allow') === true && result.imported.length > 0) {
    const allowlist = await Allowlist.open(join(cfg.storage, 'allowlist.json'), cfg.allowlist);
    const added = await allowlist.add(result.imported.map((i) => i.ref), { by: 'sluice import', note: `imported from ${path}` });
    process.stdout.write(`allowed ${added.added.length} new rule(s)\n`);
  }
  return result.failed.length > 0 ? 1 : 0;
}
