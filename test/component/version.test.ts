// `sluice version` and `sluice --version`: the release from package.json, the source revision written at build
// time (dist/build-info.json), the Node.js runtime that runs it and the store format; `--json` for scripts.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runSluice } from '../helpers/sluice.js';

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };

describe('sluice version', () => {
  beforeAll(() => {
    // What `npm run build` does after tsc; the suite's pretest ran it, a lone `npx tsc` does not.
    execFileSync(process.execPath, [join(REPO_ROOT, 'dist', 'src', 'release', 'build-info.js')]);
  });

  it('prints the version, the commit it was built from, the running Node.js and the store format', async () => {
    const r = await runSluice(['version']);
    expect(r.code).toBe(0);
    const head = execFileSync('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    expect(r.stdout).toContain(`sluice ${pkg.version}\n`);
    expect(r.stdout).toMatch(new RegExp(`^revision ${head}(-dirty)?$`, 'm'));
    expect(r.stdout).toContain(`node     ${process.version} (${process.platform}/${process.arch})`);
    expect(r.stdout).toMatch(/^store {4}format 1, PostgreSQL schema \d+$/m);
  });

  it('--version is the same command, and --json gives the same facts', async () => {
    const r = await runSluice(['--version', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ version: pkg.version, node: process.version, platform: `${process.platform}/${process.arch}`, storeFormat: 1 });
    expect(report.revision).toMatch(/^[0-9a-f]{40}(-dirty)?$/);
    expect(report.postgresSchema).toBeGreaterThanOrEqual(3);
  });

  it('takes no arguments (exit 2)', async () => {
    const r = await runSluice(['version', 'now']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('version takes no arguments');
  });
});
