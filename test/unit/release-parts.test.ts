// The pure parts of the release tool: the order and modes of archive entries (what makes two runs identical and
// an unpack create folders before their files) and the configs derived from config/sluice.yaml.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { normalMode, withParents, type Entry } from '../../src/release/tar.js';
import { NODE_FLAGS } from '../../src/release/node-flags.js';
import { configWithStore, LAUNCHER } from '../../src/release/texts.js';
import { REPO_ROOT } from '../helpers/sluice.js';
import { SERVE_NODE_FLAGS } from '../kit/sluice.js';

const file = (path: string): Entry => ({ kind: 'file', path, mode: 0o644, source: Buffer.from(path) });

describe('release archive entries', () => {
  it('adds every missing parent folder and sorts by path segment, whatever order they were listed in', () => {
    const paths = withParents([file('a-b/x'), file('a/b/c'), file('a.b'), file('a/b-c'), file('b')]).map((e) => `${e.kind === 'dir' ? 'd' : 'f'} ${e.path}`);
    expect(paths).toEqual(['d a', 'd a/b', 'f a/b/c', 'f a/b-c', 'd a-b', 'f a-b/x', 'f a.b', 'f b']);
    expect(withParents([file('b'), file('a/b/c'), file('a.b'), file('a-b/x'), file('a/b-c')])).toEqual(withParents([file('a-b/x'), file('a/b/c'), file('a.b'), file('a/b-c'), file('b')]));
  });

  it('refuses a path listed twice', () => {
    expect(() => withParents([file('a/b'), file('a/b')])).toThrow('archive lists a/b twice');
  });

  it('keeps only whether a file is executable: a checkout umask never reaches the archive', () => {
    expect([0o600, 0o664, 0o700, 0o775, 0o744].map(normalMode)).toEqual([0o644, 0o644, 0o755, 0o755, 0o755]);
  });
});

describe('configs derived from config/sluice.yaml', () => {
  const defaultYaml = readFileSync(join(REPO_ROOT, 'config', 'sluice.yaml'), 'utf8');

  it('moves the store and the admin token, and changes nothing else', () => {
    const moved = parseYaml(configWithStore(defaultYaml, '/var/lib/sluice')) as Record<string, unknown>;
    const original = parseYaml(defaultYaml) as Record<string, unknown>;
    expect(moved).toEqual({ ...original, storage: '/var/lib/sluice', admin: { ...(original.admin as object), tokenFile: '/var/lib/sluice/admin.token' } });
  });

  it('refuses a default config without the lines it rewrites, rather than ship a store inside /opt', () => {
    expect(() => configWithStore(defaultYaml.replace('storage: ./data', 'storage: ./store'), '/data')).toThrow(/storage: \.\/data/);
  });
});

describe('the Node flags sluice runs under', () => {
  it('are the launcher\'s, and the test kit and bench start `sluice serve` with the same', () => {
    expect(LAUNCHER).toContain(`"$here/../node/bin/node" ${NODE_FLAGS.join(' ')} "$here/../dist/src/main.js"`);
    expect(SERVE_NODE_FLAGS).toEqual(NODE_FLAGS);
  });

  it('are the ones `npm start` serves with', () => {
    const start = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
    expect(start).toContain(`node ${NODE_FLAGS.join(' ')} dist/src/main.js serve`);
  });

  it('keep the young generation at 32 MiB or less on this Node, however much short-lived data survives', () => {
    // Objects that survive a few scavenges each: what makes V8 grow the young generation (to 128 MiB on Node 24).
    const script = `const v8 = require('node:v8'); const ring = new Array(400000); let max = 0;
      for (let i = 0; i < 8e6; i++) { ring[i % ring.length] = { i, s: 'x' + (i & 1023) };
        if (i % 100000 === 0) max = Math.max(max, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size); }
      console.log(max);`;
    const max = Number(execFileSync(process.execPath, [...NODE_FLAGS, '-e', script], { encoding: 'utf8' }).trim());
    expect(max).toBeGreaterThan(0);
    expect(max).toBeLessThanOrEqual(33 * 1024 * 1024);
  });
});
