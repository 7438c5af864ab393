// The real `sluice` help (node dist/src/main.js): `--help` of the whole CLI and of every command fits 100 columns,
// lists every option with its sentence and default and shows an example; on a terminal it wraps to the terminal;
// an unknown command or option is exit 2 with a "did you mean"; the completion scripts complete from the table.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GLOBAL_OPTIONS, type CommandSpec, type OptionSpec } from '../../src/cli/args.js';
import { COMMANDS } from '../../src/cli/command-table.js';
import { leaves, optionNotes } from '../../src/cli/help.js';
import { run, which, type RunResult } from '../helpers/binaries.js';
import { runSluice, SLUICE_MAIN } from '../helpers/sluice.js';

const flat = (s: string): string => s.replace(/\s+/g, ' ');

/** Shells and `script` (a pseudo-terminal) are real parts: skipped loudly here, required under CI=true. */
function requireTools(names: string[]): boolean {
  const missing = names.filter((n) => which(n) === undefined);
  if (missing.length === 0) return true;
  const hint = `apt-get install -y ${missing.map((m) => (m === 'script' ? 'bsdutils' : m)).join(' ')}`;
  if (process.env.CI === 'true') throw new Error(`the CLI help suite needs ${missing.join(', ')} (CI=true, so not skipping): ${hint}`);
  console.warn(`\n${'!'.repeat(78)}\n!!! SKIPPING part of the CLI help suite: missing ${missing.join(', ')}\n!!! install with ${hint}\n${'!'.repeat(78)}\n`);
  return false;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  }));
  return results;
}

function expectOptionListed(text: string, o: OptionSpec, label: string): void {
  expect(text, `${label}: --${o.name}`).toContain(`--${o.name}${o.value ? ` ${o.value}` : ''}`);
  expect(flat(text), `${label}: the sentence and default of --${o.name}`).toContain(flat(`${o.description}${optionNotes(o)}`));
}

describe('sluice --help and every sluice CMD --help', () => {
  const parents = Object.entries(COMMANDS).filter(([, s]) => s.subcommands && !s.hidden).map(([n, s]): [string[], CommandSpec] => [[n], s]);
  const all: Array<[string[], CommandSpec | undefined]> = [[[], undefined], ...parents, ...leaves(COMMANDS)];
  let results: RunResult[];

  beforeAll(async () => {
    results = await mapLimit(all, 4, ([path]) => runSluice([...path, '--help'], { timeoutMs: 30_000 }));
  }, 120_000);

  it('every line of every help fits in 100 columns (stdout is no terminal here)', () => {
    all.forEach(([path], i) => {
      const r = results[i]!;
      expect(r.code, `sluice ${path.join(' ')} --help: ${r.stderr}`).toBe(0);
      for (const line of r.stdout.split('\n')) expect(line.length, `sluice ${path.join(' ')} --help: "${line}"`).toBeLessThanOrEqual(100);
    });
  });

  it('every command lists each of its options with its sentence and default, the global flags, and at least one example', () => {
    all.forEach(([path, spec], i) => {
      const out = results[i]!.stdout;
      const label = `sluice ${path.join(' ')} --help`;
      for (const o of [...GLOBAL_OPTIONS, ...(spec?.options ?? [])]) expectOptionListed(out, o, label);
      for (const e of spec?.env ?? []) expect(flat(out), label).toContain(flat(`${e.name} ${e.description}${optionNotes(e)}`));
      if (spec) {
        expect(out, label).toMatch(/\nExamples:\n {2}# .+\n {2}sluice \S/);
        for (const e of spec.examples ?? []) expect(out, label).toContain(`  sluice ${e.command}\n`);
      }
    });
    const top = results[0]!.stdout;
    for (const [path, spec] of leaves(COMMANDS)) expect(flat(top), path.join(' ')).toContain(flat(spec.summary));
    expect(top).toContain("Run 'sluice COMMAND --help' for more about a command.");
    expect(results[all.findIndex(([p]) => p.join(' ') === 'serve')]!.stdout).toContain('SLUICE_SHUTDOWN_GRACE_MS');
  });

  it.runIf(requireTools(['script']))('on a terminal the help wraps to the terminal width', async () => {
    // script(1) gives sluice a pseudo-terminal for stdout; stty sets its width to 60 columns.
    const r = await run('script', ['-qec', `stty cols 60; ${process.execPath} ${SLUICE_MAIN} export --help`, '/dev/null'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.replace(/\r/g, '').split('\n');
    expect(lines.some((l) => l.includes('--format FORMAT'))).toBe(true);
    for (const line of lines) expect(line.length, `"${line}"`).toBeLessThanOrEqual(60);
    expect(Math.max(...lines.map((l) => l.length))).toBeGreaterThan(50);
  });
});

describe('unknown commands and options', () => {
  it.each([
    [['stauts'], 'sluice: unknown command "stauts"', 'did you mean status?'],
    [['exprot', 'out'], 'unknown command "exprot"', 'did you mean export?'],
    [['status', '--jsno'], 'sluice status: unknown option --jsno', 'did you mean --json?'],
    [['export', 'out', '--fromat', 'tar'], 'unknown option --fromat', 'did you mean --format?'],
    [['allow', 'lst'], 'unknown allow command "lst"', 'did you mean ls?'],
    [['window', 'opne', '2h'], 'unknown window command "opne"', 'did you mean open?'],
  ])('sluice %j is exit 2 with the error, a "did you mean" and the usage line', async (args, error, hint) => {
    const r = await runSluice(args, { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(error);
    expect(r.stderr).toContain(hint);
    expect(r.stderr).toMatch(/usage: sluice .*\nRun 'sluice .*--help' for more\./);
    expect(r.stdout).toBe('');
  });

  it('nothing close: no suggestion, still exit 2', async () => {
    const r = await runSluice(['frobnicate'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
    expect(r.stderr).not.toContain('did you mean');
  });
});

describe('sluice completion bash|zsh|fish', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-completion-'));
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await runSluice(['completion', shell], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      await writeFile(join(dir, shell), r.stdout);
    }
  }, 60_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('an unknown shell is a usage error', async () => {
    const r = await runSluice(['completion', 'tcsh'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bash, zsh, fish');
  });

  const bash = async (...words: string[]): Promise<string[]> => {
    const script = `source ${join(dir, 'bash')}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _sluice; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await run('bash', ['-c', script], { cwd: dir, timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.split('\n').filter((l) => l !== '');
  };

  it('bash completes commands, subcommands, options and fixed values from the table', async () => {
    expect(await bash('sluice', 'sta')).toEqual(['status']);
    expect(await bash('sluice', '--config', 'x.yaml', 'veri')).toEqual(['verify']);
    expect((await bash('sluice', 'allow', 'r')).sort()).toEqual(['remove', 'rm']);
    expect(await bash('sluice', 'export', 'out.tar', '--fo')).toEqual(['--format']);
    expect((await bash('sluice', 'export', 'out', '--format', 'talos')).sort()).toEqual(['talos-cache-flat', 'talos-cache-oci']);
    expect(await bash('sluice', 'denied', '--format', 'c')).toEqual(['commands']);
    expect(await bash('sluice', 'window', 'open', '2h', '--n')).toEqual(['--note']);
    expect(await bash('sluice', 'talos', 'patch', '--client-')).toEqual(['--client-cert', '--client-key']);
    expect(await bash('sluice', 'docs')).toEqual([]);
  });

  it.runIf(requireTools(['fish']))('fish completes commands, subcommands and options', async () => {
    const fish = async (line: string): Promise<string[]> => {
      const r = await run('fish', ['--no-config', '-c', `source ${join(dir, 'fish')}; complete -C '${line}'`], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t')[0] ?? '');
    };
    expect(await fish('sluice sta')).toEqual(['status']);
    expect((await fish('sluice allow ')).sort()).toEqual(['add', 'import', 'ls', 'rm']);
    expect(await fish('sluice export out --form')).toContain('--format');
    expect(await fish('sluice gc --dry')).toEqual(['--dry-run']);
  });

  it.runIf(requireTools(['zsh']))('the zsh script is valid zsh and names every command', async () => {
    const r = await run('zsh', ['-n', join(dir, 'zsh')], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const text = (await run('cat', [join(dir, 'zsh')])).stdout;
    for (const [path] of leaves(COMMANDS)) expect(text).toContain(`'${path.at(-1)}:`);
  });
});
