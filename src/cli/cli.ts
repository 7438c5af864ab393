// The `sluice` command line: finds the command in the table (command-table.ts), answers --help, parses, loads the
// config, runs, and returns the exit code (0 ok, 1 failed, 2 usage or config error). main.ts is the only place that exits.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closest, flag, locate, parseInvocation, specAt, UsageError } from './args.js';
import { COMMANDS, INTRO } from './command-table.js';
import { helpText, helpWidth, usageHint } from './help.js';

export const DEFAULT_CONFIG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'config', 'sluice.yaml');

const visible = (names: Record<string, { hidden?: boolean; aliases?: readonly string[] }>): string[] =>
  Object.entries(names).filter(([, s]) => !s.hidden).flatMap(([n, s]) => [n, ...(s.aliases ?? [])]);

export async function runCli(argv: string[]): Promise<number> {
  const inv = locate(COMMANDS, argv[0] === '--version' ? ['version', ...argv.slice(1)] : argv);
  if (!inv) {
    process.stderr.write(`${helpText(COMMANDS, [], helpWidth(process.stderr), INTRO)}\n`);
    return 2;
  }
  const [name = ''] = inv.path;
  const command = COMMANDS[name];
  if (inv.path.length > 0 && !command) return usageError(new UsageError(`unknown command "${name}"`, closest(name, visible(COMMANDS))), []);
  // Help is answered before anything is parsed, loaded or run: `sync --help` never syncs.
  if (inv.help || !command) {
    process.stdout.write(`${helpText(COMMANDS, inv.path, helpWidth(process.stdout), INTRO)}\n`);
    return 0;
  }
  try {
    const args = parseInvocation(COMMANDS, inv);
    if (command.subcommands && inv.path.length === 1) {
      const [word] = args.positionals;
      throw word === undefined
        ? new UsageError(`${name} needs a command: ${Object.keys(command.subcommands).join(', ')}`)
        : new UsageError(`unknown ${name} command "${word}"`, closest(word, visible(command.subcommands)));
    }
    const file = flag(args, 'config') ?? process.env.SLUICE_CONFIG ?? DEFAULT_CONFIG;
    const run = command.run ?? specAt(COMMANDS, inv.path)?.run;
    if (!run) throw new UsageError(`${inv.path.join(' ')} cannot be run`);
    // Loaded here, not at the top: help and usage errors answer without the YAML parser.
    const { loadConfig } = await import('../config/config.js');
    return await run(args, () => loadConfig(file));
  } catch (e) {
    if (e instanceof UsageError) return usageError(e, inv.path);
    const problem = await configProblem(e);
    if (problem) {
      process.stderr.write(`sluice: ${problem.message}\n`);
      return 2;
    }
    throw e;
  }
}

/** A config or allowlist file sluice cannot use (exit 2); their modules are loaded by then if they threw. */
async function configProblem(e: unknown): Promise<Error | undefined> {
  const [{ ConfigError }, { AllowlistFileError }] = await Promise.all([import('../config/config.js'), import('../policy/allowlist.js')]);
  return e instanceof ConfigError || e instanceof AllowlistFileError ? e : undefined;
}

/** The error, a "did you mean" when something close exists, the usage line and where to read more; exit 2. */
function usageError(e: UsageError, path: string[]): number {
  const where = ['sluice', ...path].join(' ');
  const hint = e.hint ? `\ndid you mean ${e.hint}?` : '';
  process.stderr.write(`${where}: ${e.message}${hint}\n${usageHint(COMMANDS, path)}\n`);
  return 2;
}
