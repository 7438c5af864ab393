// The shape of the command table (command-table.ts) and the parsing it drives: each command declares its options,
// so parsing, `--help`, unknown options and global options are one mechanism. A usage problem throws UsageError,
// which the CLI turns into exit code 2; its `hint` is a close match ("did you mean").
import type { Config } from '../config/config.js';

export class UsageError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export interface ParsedArgs {
  positionals: string[];
  flags: Map<string, string | true>;
}

export type Command = (args: ParsedArgs, config: () => Config) => Promise<number>;

/** One option of a command. A `value` name makes it take a value (`--since RECEIPT`); without one it is a switch. */
export interface OptionSpec {
  name: string;
  value?: string;
  /** The values it accepts, when they are a fixed few (offered by shell completion). */
  choices?: readonly string[];
  /** One sentence, starting lower case, no final stop. */
  description: string;
  /** What applies when the option is not given, as the operator reads it. */
  default?: string;
  /** An environment variable that sets it when the option is not given. */
  env?: string;
}

/** An environment variable a command reads that is no option (e.g. SLUICE_SHUTDOWN_GRACE_MS). */
export interface EnvSpec {
  name: string;
  description: string;
  default?: string;
}

export interface Example {
  /** The command line, without the leading `sluice `. */
  command: string;
  /** What it does, one line. */
  comment: string;
}

export interface CommandSpec {
  /** One line, lower case, no final stop: shown in command lists. */
  summary: string;
  /** What follows the command's name besides options, e.g. `OUT [RULE...]`. */
  args?: string;
  /** More sentences shown in the command's own help and the reference. */
  description?: string;
  options?: readonly OptionSpec[];
  env?: readonly EnvSpec[];
  /** At least one per runnable command (a test checks). */
  examples?: readonly Example[];
  aliases?: readonly string[];
  /** Not listed in help, completion or the reference (developer tools). */
  hidden?: boolean;
  /** Chosen by the first positional (`allow add`, `window open`); the parent's run dispatches on it. */
  subcommands?: Readonly<Record<string, CommandSpec>>;
  run?: Command;
}

export type CommandTable = Readonly<Record<string, CommandSpec>>;

/** Accepted by every command, before or after its name. */
export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { name: 'config', value: 'FILE', description: 'the configuration file', default: 'config/sluice.yaml of the installation', env: 'SLUICE_CONFIG' },
  { name: 'help', description: 'print this help and do nothing else (also: sluice help COMMAND)' },
];

/** Only before any command: `sluice --version` runs `sluice version`. */
export const ROOT_OPTIONS: readonly OptionSpec[] = [{ name: 'version', description: 'print the version and exit, as sluice version does' }];

interface Options {
  valued: Set<string>;
  booleans: Set<string>;
}

export interface Invocation {
  /** The command, and its subcommand when it has them and one was named: `['allow', 'add']`. */
  path: string[];
  /** `--help`/`-h` anywhere (before `--`), or `sluice help CMD`: print the help of `path`, run nothing. */
  help: boolean;
  /** The arguments after the command's name, options given before it included; parse with parseInvocation. */
  argv: string[];
}

const isOption = (a: string): boolean => a.startsWith('-') && a !== '-' && a !== '--';
const isHelp = (a: string): boolean => a === '--help' || a === '-h';

/** Finds the command in argv; undefined when none is named (`sluice` or `sluice --config F`). */
export function locate(table: CommandTable, argv: readonly string[]): Invocation | undefined {
  const valued = optionsOf(table, []).valued;
  const hoisted: string[] = [];
  let i = 0;
  for (; i < argv.length && isOption(argv[i] ?? ''); i++) {
    const a = argv[i] ?? '';
    hoisted.push(a);
    if (!a.includes('=') && valued.has(a.slice(2)) && i + 1 < argv.length) hoisted.push(argv[++i] ?? '');
  }
  let name = argv[i];
  const rest = [...hoisted, ...argv.slice(i + 1)];
  const end = rest.indexOf('--');
  let help = (end === -1 ? rest : rest.slice(0, end)).some(isHelp);
  if (name === 'help') {
    help = true;
    const words = positionals(rest, valued);
    name = words[0];
    rest.splice(rest.indexOf(name ?? ''), name === undefined ? 0 : 1);
  }
  if (name === undefined) return help ? { path: [], help, argv: rest } : undefined;
  const spec = table[name];
  const sub = spec?.subcommands ? subcommandOf(spec, positionals(rest, valued)[0]) : undefined;
  return { path: sub ? [name, sub] : [name], help, argv: rest };
}

/** Parses the arguments against the options `path` declares; anything else is a UsageError naming it. */
export function parseInvocation(table: CommandTable, inv: Invocation): ParsedArgs {
  return parseArgs(inv.argv, optionsOf(table, inv.path));
}

function parseArgs(argv: readonly string[], opts: Options): ParsedArgs {
  const out: ParsedArgs = { positionals: [], flags: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!isOption(a)) {
      out.positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.startsWith('--') ? a.slice(2, eq === -1 ? undefined : eq) : '';
    if (opts.valued.has(name)) {
      const v = eq === -1 ? argv[++i] : a.slice(eq + 1);
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      out.flags.set(name, v);
    } else if (opts.booleans.has(name)) {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      out.flags.set(name, true);
    } else {
      const given = eq === -1 ? a : a.slice(0, eq);
      const close = closest(given.replace(/^-+/, ''), [...opts.valued, ...opts.booleans]);
      throw new UsageError(`unknown option ${given}`, close === undefined ? undefined : `--${close}`);
    }
  }
  return out;
}

export function flag(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

export function specAt(table: CommandTable, path: readonly string[]): CommandSpec | undefined {
  const [name, sub] = path;
  const spec = name === undefined ? undefined : table[name];
  return sub === undefined ? spec : spec?.subcommands?.[sub];
}

function subcommandOf(spec: CommandSpec, word: string | undefined): string | undefined {
  if (word === undefined) return undefined;
  return Object.entries(spec.subcommands ?? {}).find(([name, s]) => name === word || (s.aliases ?? []).includes(word))?.[0];
}

/** The options of `path` (of all its subcommands for a parent; of every command for `[]`), global ones included. */
export function optionsOf(table: CommandTable, path: readonly string[]): Options {
  const opts: Options = { valued: new Set(), booleans: new Set() };
  const spec = specAt(table, path);
  const specs = path.length === 0 || !spec ? Object.values(table) : [spec];
  for (const o of [...GLOBAL_OPTIONS, ...specs.flatMap(allOptions)]) (o.value === undefined ? opts.booleans : opts.valued).add(o.name);
  return opts;
}

/** The options of a command and of all its subcommands. */
export function allOptions(spec: CommandSpec): OptionSpec[] {
  return [...(spec.options ?? []), ...Object.values(spec.subcommands ?? {}).flatMap(allOptions)];
}

/** The positionals of argv, skipping the values of valued options (to find a subcommand before parsing). */
function positionals(argv: readonly string[], valued: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') return [...out, ...argv.slice(i + 1)];
    if (!isOption(a)) out.push(a);
    else if (!a.includes('=') && valued.has(a.slice(2))) i++;
  }
  return out;
}

/** The candidate nearest to `word` by edit distance, when it is close enough to be a typo (cobra's rule: ≤ 2). */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = c.startsWith(word) && word.length >= 2 ? 1 : editDistance(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** Levenshtein distance, with a swap of two neighbours counted as one edit (`stauts` → `status`). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] ?? [];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((d[i - 1]?.[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (d[i - 1]?.[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j] ?? 0, (d[i - 2]?.[j - 2] ?? 0) + 1);
    }
  }
  return d[a.length]?.[b.length] ?? 0;
}
