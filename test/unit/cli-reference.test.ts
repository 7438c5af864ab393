// The command reference (src/cli/README.md) and README.md's command block are what the command table generates,
// the way crane checks its doc/: an option or command added to the table without regenerating them fails here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allOptions, GLOBAL_OPTIONS, type CommandTable, type OptionSpec } from '../../src/cli/args.js';
import { COMMANDS } from '../../src/cli/command-table.js';
import { leaves } from '../../src/cli/help.js';
import { readmeBlock, referenceMarkdown, REFERENCE_FILE, withReadmeBlock } from '../../src/cli/reference.js';

const ROOT = join(import.meta.dirname, '..', '..');
const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');

describe('the CLI reference is generated from the command table', () => {
  it('src/cli/README.md is exactly what the table generates (run `npm run docs` after changing the table)', () => {
    expect(read(REFERENCE_FILE)).toBe(referenceMarkdown(COMMANDS));
  });

  it("README.md's command block is exactly what the table generates", () => {
    const readme = read('README.md');
    expect(withReadmeBlock(readme, readmeBlock(COMMANDS)), 'README.md lost its generated-commands markers').toBe(readme);
  });

  it('an option added to the table without regenerating makes the reference differ (the check can fail)', () => {
    const sync = COMMANDS.sync;
    if (!sync) throw new Error('no sync command');
    const added: OptionSpec = { name: 'resume', description: 'carry on where the last sync stopped' };
    const changed: CommandTable = { ...COMMANDS, sync: { ...sync, options: [...(sync.options ?? []), added] } };
    expect(referenceMarkdown(changed)).not.toBe(read(REFERENCE_FILE));
    expect(referenceMarkdown(changed)).toContain('| `--resume` |');
    expect(withReadmeBlock(read('README.md'), readmeBlock({ ...COMMANDS, mirror: { summary: 'x', run: sync.run } }))).not.toBe(read('README.md'));
  });
});

describe('the command table', () => {
  it('every visible command has a summary and at least one example; every option a sentence', () => {
    for (const [path, spec] of leaves(COMMANDS)) {
      expect(spec.summary, path.join(' ')).not.toBe('');
      expect(spec.examples?.length ?? 0, `${path.join(' ')} has no example`).toBeGreaterThan(0);
      for (const e of spec.examples ?? []) expect(e.command.startsWith(path[0] ?? ''), e.command).toBe(true);
      for (const o of spec.options ?? []) expect(o.description.length, `${path.join(' ')} --${o.name}`).toBeGreaterThan(10);
    }
  });

  it('one meaning per flag name: a name takes a value everywhere or nowhere, with the same value name', () => {
    const seen = new Map<string, string>();
    for (const o of [...GLOBAL_OPTIONS, ...Object.values(COMMANDS).flatMap(allOptions)]) {
      const shape = o.value ?? '(switch)';
      expect(seen.get(o.name) ?? shape, `--${o.name}`).toBe(shape);
      seen.set(o.name, shape);
    }
    // --format is "the form of what is written" for every command that takes it.
    const formats = Object.values(COMMANDS).flatMap(allOptions).filter((o) => o.name === 'format');
    expect(formats.length).toBeGreaterThan(1);
    for (const f of formats) expect(f.description).toMatch(/^the form of what is written: /);
  });

  it('no option name repeats within a command, and none shadows a global one', () => {
    for (const [path, spec] of leaves(COMMANDS)) {
      const names = [...GLOBAL_OPTIONS, ...(spec.options ?? [])].map((o) => o.name);
      expect(new Set(names).size, path.join(' ')).toBe(names.length);
    }
  });
});
