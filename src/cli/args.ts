// Command-line parsing for every subcommand, driven by one table of commands (cli.ts): each entry's usage line
// is also the list of options it accepts, so `--help`, unknown options and global options are one mechanism.
// A usage problem throws UsageError, which the CLI turns into exit code 2.

export class UsageError extends Error {}

export interface ParsedArgs {
  positionals: string[];
  flags: Map<string, string | true>;
}

export interface CommandSpec {
  summary: string;
  /** What follows the command's name, e.g. `PATH [--as REF] [--allow]`: `--name WORD` takes a value, `--name` is a switch. */
  usage?: string;
  aliases?: readonly string[];
  /** Chosen by the first positional (`allow add`, `window open`); the parent's run dispatches on it. */
  subcommands?: Readonly<Record<string, CommandSpec>>;
}

export type CommandTable = Readonly<Record<string, CommandSpec>>;

/** Accepted by every command, before or after its name. */
const GLOBAL_USAGE = '--config FILE --help';
const GLOBAL_NOTE = 'every command takes --config FILE (or SLUICE_CONFIG) and -h/--help, before or after its name';

interface Options {
  valued: Set<string>;
  booleans: Set<string>;
}

export interface Invocation {
  /** The command, and its subcommand when it has them and one was named: `['allow', 'add']`. */
  path: string[];
  /** `--help`/`-h` anywhere (before `--`), or `sluice help CMD`: print the usage of `path`, run nothing. */
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
    name = positionals(rest, valued)[0];
    rest.splice(rest.indexOf(name ?? ''), name === undefined ? 0 : 1);
  }
  if (name === undefined) return help ? { path: [], help, argv: rest } : undefined;
  const spec = table[name];
  const sub = spec?.subcommands ? subcommandOf(spec, positionals(rest, valued)[0]) : undefined;
  return { path: sub ? [name, sub] : [name], help, argv: rest };
}

/** Parses the arguments against the options `path`'s usage names; anything else is a UsageError naming it. */
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
      throw new UsageError(`unknown option ${eq === -1 ? a : a.slice(0, eq)}`);
    }
  }
  return out;
}

export function flag(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

/** The usage text for `path` (the whole table for `[]`; every subcommand for a parent). */
export function usageText(table: CommandTable, path: readonly string[]): string {
  const spec = specAt(table, path);
  if (!spec) return topUsage(table);
  const lines = leaves(path, spec);
  const w = Math.max(...lines.map((l) => l.left.length));
  const body = lines.map((l, i) => `${i === 0 ? 'usage: ' : '       '}sluice ${l.left.padEnd(w)}  ${l.summary}`);
  return [...body, GLOBAL_NOTE].join('\n');
}

function topUsage(table: CommandTable): string {
  const lines = Object.entries(table).flatMap(([name, spec]) => leaves([name], spec));
  const w = Math.max(...lines.map((l) => l.left.length));
  return [
    'usage: sluice <command> [options]   (sluice <command> --help: that command only)',
    ...lines.map((l) => `  ${l.left.padEnd(w)}  ${l.summary}`),
    GLOBAL_NOTE,
  ].join('\n');
}

function leaves(path: readonly string[], spec: CommandSpec): Array<{ left: string; summary: string }> {
  if (!spec.subcommands) return [{ left: [...path, spec.usage ?? ''].join(' ').trimEnd(), summary: spec.summary }];
  return Object.entries(spec.subcommands).flatMap(([name, sub]) => leaves([...path, name], sub));
}

function specAt(table: CommandTable, path: readonly string[]): CommandSpec | undefined {
  const [name, sub] = path;
  const spec = name === undefined ? undefined : table[name];
  return sub === undefined ? spec : spec?.subcommands?.[sub];
}

function subcommandOf(spec: CommandSpec, word: string | undefined): string | undefined {
  if (word === undefined) return undefined;
  return Object.entries(spec.subcommands ?? {}).find(([name, s]) => name === word || (s.aliases ?? []).includes(word))?.[0];
}

/** The options of `path` (of all its subcommands for a parent; of every command for `[]`), global ones included. */
function optionsOf(table: CommandTable, path: readonly string[]): Options {
  const opts: Options = { valued: new Set(), booleans: new Set() };
  const spec = specAt(table, path);
  const usages = path.length === 0 || !spec ? Object.entries(table).flatMap(([n, s]) => leaves([n], s)) : leaves(path, spec);
  for (const text of [GLOBAL_USAGE, ...usages.map((l) => l.left)]) {
    for (const m of text.matchAll(/--([a-z][a-z-]*)( [^\s[\]|-][^\s[\]|]*)?/g)) {
      (m[2] === undefined ? opts.booleans : opts.valued).add(m[1] ?? '');
    }
  }
  return opts;
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
