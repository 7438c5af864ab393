// The command reference generated from the command table: src/cli/README.md, and the command table between the
// markers in README.md. `npm run docs` (the hidden `sluice docs`) writes both; a test fails when either differs.
import { readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GLOBAL_OPTIONS, type CommandSpec, type CommandTable, type OptionSpec, type ParsedArgs } from './args.js';
import { leaves, synopsis } from './help.js';

export const REFERENCE_FILE = 'src/cli/README.md';
export const README_BEGIN = '<!-- BEGIN commands: generated from src/cli/command-table.ts by `npm run docs`; do not edit -->';
export const README_END = '<!-- END commands -->';

const cell = (s: string): string => s.replace(/\|/g, '\\|');
const anchor = (path: readonly string[]): string => ['sluice', ...path].join('-').toLowerCase().replace(/[^a-z0-9 -]/g, '');
const code = (s: string): string => `\`${cell(s)}\``;

function optionTable(options: readonly OptionSpec[]): string[] {
  if (options.length === 0) return [];
  return [
    '| flag | value | default | env | meaning |',
    '|---|---|---|---|---|',
    ...options.map((o) => `| ${code(`--${o.name}`)} | ${o.value ? code(o.value) : ''} | ${cell(o.default ?? '')} | ${o.env ? code(o.env) : ''} | ${cell(o.description)} |`),
  ];
}

function commandSection(path: string[], spec: CommandSpec): string[] {
  const out = [`## sluice ${path.join(' ')}`, '', `${spec.summary.charAt(0).toUpperCase()}${spec.summary.slice(1)}.${spec.description ? ` ${spec.description}` : ''}`, ''];
  out.push('```', `sluice ${synopsis(path, spec)}`, '```', '');
  if (spec.aliases?.length) out.push(`Also: ${spec.aliases.map((a) => code([...path.slice(0, -1), a].join(' '))).join(', ')}.`, '');
  const options = optionTable(spec.options ?? []);
  if (options.length > 0) out.push(...options, '');
  if (spec.env?.length) {
    out.push('| environment | default | meaning |', '|---|---|---|', ...spec.env.map((e) => `| ${code(e.name)} | ${cell(e.default ?? '')} | ${cell(e.description)} |`), '');
  }
  if (spec.examples?.length) {
    out.push('```sh', ...spec.examples.flatMap((e) => [`# ${e.comment}`, `sluice ${e.command}`]), '```', '');
  }
  return out;
}

/** src/cli/README.md: every visible command, its synopsis, options, environment and examples. */
export function referenceMarkdown(table: CommandTable): string {
  const all = leaves(table);
  return [
    '# sluice command reference',
    '',
    'Generated from the command table (`src/cli/command-table.ts`) by `npm run docs`; a test fails when this file',
    'differs from what the table generates, so edit the table, not this file. `sluice CMD --help` prints the same.',
    '',
    '| command | what it does |',
    '|---|---|',
    ...all.map(([path, spec]) => `| [${code(`sluice ${path.join(' ')}`)}](#${anchor(path)}) | ${cell(spec.summary)} |`),
    '',
    'Every command takes these flags, before or after its name (`sluice --config F status`):',
    '',
    ...optionTable(GLOBAL_OPTIONS),
    '',
    'Exit codes: 0 done; 1 the operation failed; 2 a usage or configuration error (an unknown command or option',
    'names a close match when there is one). Commands that run long (`sync`, `import`, `export`, `verify`, `gc`) draw',
    'a progress line on stderr when it is a terminal and print nothing of it otherwise.',
    '',
    ...all.flatMap(([path, spec]) => commandSection(path, spec)),
  ].join('\n').replace(/\n+$/, '\n');
}

/** The block README.md carries between its markers: one row per command, linking to the reference. */
export function readmeBlock(table: CommandTable): string {
  return [
    README_BEGIN,
    '| command | what it does |',
    '|---|---|',
    ...leaves(table).map(([path, spec]) => `| [${code(`sluice ${synopsis(path, spec)}`)}](${REFERENCE_FILE}#${anchor(path)}) | ${cell(spec.summary)} |`),
    README_END,
  ].join('\n');
}

/** README.md with its marked block replaced by `block`; undefined when the markers are missing. */
export function withReadmeBlock(readme: string, block: string): string | undefined {
  const begin = readme.indexOf(README_BEGIN);
  const end = readme.indexOf(README_END);
  if (begin === -1 || end < begin) return undefined;
  return `${readme.slice(0, begin)}${block}${readme.slice(end + README_END.length)}`;
}

/** The checkout this code was built from: dist/src/cli/ or dist/bundle/cli/ → three folders up; src/cli/ (run by a test) → two. */
export function repoRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return basename(resolve(here, '..', '..')) === 'dist' ? resolve(here, '..', '..', '..') : resolve(here, '..', '..');
}

/** `sluice docs [--check]`: writes (or checks) the reference and README.md's command block. */
export async function docsCommand(table: CommandTable, args: ParsedArgs): Promise<number> {
  const root = repoRoot();
  const readmePath = join(root, 'README.md');
  const readme = await readFile(readmePath, 'utf8');
  const newReadme = withReadmeBlock(readme, readmeBlock(table));
  if (newReadme === undefined) {
    process.stderr.write(`sluice docs: README.md has no ${README_BEGIN} … ${README_END} block\n`);
    return 1;
  }
  const files: Array<[string, string]> = [[join(root, REFERENCE_FILE), referenceMarkdown(table)], [readmePath, newReadme]];
  let stale = 0;
  for (const [file, text] of files) {
    const current = await readFile(file, 'utf8').catch(() => '');
    if (current === text) continue;
    stale++;
    if (args.flags.get('check') === true) process.stderr.write(`${file} differs from what the command table generates: run npm run docs\n`);
    else {
      await writeFile(file, text);
      process.stdout.write(`wrote ${file}\n`);
    }
  }
  return args.flags.get('check') === true && stale > 0 ? 1 : 0;
}
