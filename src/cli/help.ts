// The help text of the command table, in the shape skopeo, talosctl and crane share (usage, commands, flags with
// type, default and sentence, global flags, examples), wrapped to a width. Pure: table and width in, text out.
import { GLOBAL_OPTIONS, ROOT_OPTIONS, specAt, type CommandSpec, type CommandTable, type EnvSpec, type OptionSpec } from './args.js';

/** Help never runs wider than this, and is this wide when stdout is no terminal (a pipe, a file, the reference). */
export const HELP_MAX_COLUMNS = 100;

/** The width to wrap help to: the terminal's, at most HELP_MAX_COLUMNS; HELP_MAX_COLUMNS when not a terminal. */
export function helpWidth(stream: { isTTY?: boolean; columns?: number }): number {
  if (!stream.isTTY || !stream.columns) return HELP_MAX_COLUMNS;
  return Math.max(40, Math.min(stream.columns, HELP_MAX_COLUMNS));
}

/** The words of `text` in lines of at most `width` (a word longer than that gets a line of its own). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line !== '') lines.push(line);
  return lines.length > 0 ? lines : [''];
}

/** Two columns: the left padded to a common width (at most `maxLeft`; a longer one puts its text on the next line). */
export function columns(rows: ReadonlyArray<readonly [string, string]>, width: number, indent = 2, maxLeft = 30): string[] {
  const left = Math.min(maxLeft, Math.max(0, ...rows.map(([l]) => l.length)));
  const side = width - (indent + left + 3) >= 30;
  // Too narrow for two columns: each text goes under its left part, indented.
  const textAt = side ? indent + left + 3 : indent + 4;
  const out: string[] = [];
  for (const [l, r] of rows) {
    const text = wrap(r, width - textAt);
    if (!side) {
      out.push(`${' '.repeat(indent)}${l}`, ...text.map((t) => `${' '.repeat(textAt)}${t}`));
      continue;
    }
    if (l.length > left) out.push(`${' '.repeat(indent)}${l}`);
    else out.push(`${' '.repeat(indent)}${l.padEnd(left)}   ${text.shift() ?? ''}`.trimEnd());
    for (const t of text) out.push(`${' '.repeat(textAt)}${t}`);
  }
  return out;
}

const sentence = (s: string): string => `${s.charAt(0).toUpperCase()}${s.slice(1)}${/[.!?]$/.test(s) ? '' : '.'}`;

/** `verify [--repair] [--json]` when a command has at most two options, both switches; else `export OUT [flags]`. */
export function synopsis(path: readonly string[], spec: CommandSpec): string {
  const head = [...path, spec.args ?? ''].join(' ').trimEnd();
  if (spec.subcommands) return `${head} COMMAND`;
  const options = spec.options ?? [];
  if (options.length === 0) return head;
  const inline = options.length <= 2 && options.every((o) => o.value === undefined);
  return inline ? `${head} ${options.map((o) => `[--${o.name}]`).join(' ')}` : `${head} [flags]`;
}

/** What the option says after its sentence: its default and environment variable. */
export function optionNotes(o: OptionSpec | EnvSpec): string {
  const notes = [o.default === undefined ? '' : `default: ${o.default}`, 'env' in o && o.env ? `env ${o.env}` : ''].filter((n) => n !== '');
  return notes.length > 0 ? ` (${notes.join('; ')})` : '';
}

function optionRows(options: readonly OptionSpec[]): Array<[string, string]> {
  return options.map((o) => [
    `${o.name === 'help' ? '-h, ' : '    '}--${o.name}${o.value ? ` ${o.value}` : ''}`,
    `${o.description}${optionNotes(o)}`,
  ]);
}

/** The visible commands of a table or of a parent: `[path, spec]` for every runnable one, subcommands expanded. */
export function leaves(table: CommandTable, prefix: readonly string[] = []): Array<[string[], CommandSpec]> {
  return Object.entries(table)
    .filter(([, spec]) => !spec.hidden)
    .flatMap(([name, spec]): Array<[string[], CommandSpec]> => (spec.subcommands ? leaves(spec.subcommands, [...prefix, name]) : [[[...prefix, name], spec]]));
}

/** The help of `path` (the whole table for `[]`), wrapped to `width`. */
export function helpText(table: CommandTable, path: readonly string[], width: number, intro: string): string {
  const spec = specAt(table, path);
  const out: string[] = [];
  const section = (title: string, lines: string[]): void => {
    if (lines.length > 0) out.push('', `${title}:`, ...lines);
  };
  if (!spec) {
    out.push(...wrap(intro, width), '', ...wrap('usage: sluice COMMAND [flags]', width));
    section('Commands', columns(leaves(table).map(([p, s]) => [synopsis(p, s), s.summary]), width));
    section('Flags', columns(optionRows(ROOT_OPTIONS), width));
  } else {
    out.push(...wrap(`${sentence(spec.summary)}${spec.description ? ` ${spec.description}` : ''}`, width), '', ...wrap(`usage: sluice ${synopsis(path, spec)}`, width));
    if (spec.aliases?.length) out.push(`aliases: ${spec.aliases.join(', ')}`);
    if (spec.subcommands) section('Commands', columns(leaves(spec.subcommands).map(([p, s]) => [synopsis(p, s), s.summary]), width));
    section('Flags', columns(optionRows(spec.options ?? []), width));
  }
  section('Global flags', columns(optionRows(GLOBAL_OPTIONS), width));
  const env = spec?.env ?? [];
  section('Environment', columns(env.map((e) => [e.name, `${e.description}${optionNotes(e)}`]), width));
  section('Examples', examplesOf(spec ? [[[...path], spec]] : [], width));
  out.push('', ...wrap(spec?.subcommands || !spec ? `Run 'sluice ${[...path, 'COMMAND'].join(' ')} --help' for more about a command.` : "Run 'sluice --help' for every command.", width));
  return out.join('\n');
}

function examplesOf(specs: Array<[string[], CommandSpec]>, width: number): string[] {
  const lines: string[] = [];
  for (const [path, spec] of specs) {
    const own = spec.examples ?? [];
    const fromSubs = spec.subcommands ? leaves(spec.subcommands, path).flatMap(([, s]) => (s.examples ?? []).slice(0, 1)) : [];
    for (const e of [...own, ...fromSubs]) lines.push(...wrap(e.comment, width - 4).map((l) => `  # ${l}`), ...commandLines(`sluice ${e.command}`, width));
  }
  return lines;
}

/** A command line in lines of at most `width`, continued with ` \\` and never broken inside quotes. */
function commandLines(command: string, width: number): string[] {
  const words = command.match(/(?:[^\s'"]+|'[^']*'|"[^"]*")+/g) ?? [command];
  const lines = wrap(words.map((w) => w.replace(/ /g, '\u0000')).join(' '), width - 6).map((l) => l.replace(/\u0000/g, ' '));
  return lines.map((l, i) => `${i === 0 ? '  ' : '      '}${l}${i < lines.length - 1 ? ' \\' : ''}`);
}

/** The short usage printed under a usage error: the command's usage line and where to read more. */
export function usageHint(table: CommandTable, path: readonly string[]): string {
  const spec = specAt(table, path);
  const line = spec ? `usage: sluice ${synopsis(path, spec)}` : 'usage: sluice COMMAND [flags]';
  return `${line}\nRun 'sluice ${[...path, '--help'].join(' ')}' for more.`;
}
