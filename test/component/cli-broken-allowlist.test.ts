// The real CLI against a real `sluice serve` whose allowlist.json was broken by hand:
// `allow ls` lists the rules still in force and warns naming the file and the problem, `allow add` is refused
// with the same (exit 1, never "internal error"), `status` warns too, and the server logged why.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuleRecord } from '../../src/policy/allowlist.js';
import type { RunResult } from '../helpers/binaries.js';
import { freePort } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';

const RULE = 'ghcr.io/siderolabs/kubelet:v1.31.2';

function expectRc(r: RunResult, code: number): void {
  expect(r.code, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(code);
}

describe('sluice CLI with a running server and a hand-broken allowlist.json', () => {
  let server: SluiceProcess;
  let file: string;
  const cli = (...args: string[]): Promise<RunResult> => runSluice([...args, '--config', server.configFile]);

  beforeAll(async () => {
    const adminPort = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'sluice-cli-broken-'));
    server = await startSluiceProcess(
      sluiceConfigYaml('./data', { allowlist: [RULE], extra: { admin: { listen: `127.0.0.1:${adminPort}` } } }),
      { dir },
    );
    file = join(dir, 'data', 'allowlist.json');
  });
  afterAll(async () => {
    await server?.stop();
    if (server) await rm(server.dir, { recursive: true, force: true });
  });

  it('allow ls keeps listing the rules in force and says which file is wrong; allow add is refused naming it', async () => {
    expect((JSON.parse(await readFile(file, 'utf8')) as { rules: RuleRecord[] }).rules.map((r) => r.rule)).toEqual([RULE]);
    await writeFile(file, '{"version": 1, "rules": [');

    const ls = await cli('allow', 'ls');
    expectRc(ls, 0);
    expect(ls.stdout).toContain(RULE);
    expect(ls.stderr).toContain(`allowlist file ${file} is not usable`);
    expect(ls.stderr).toMatch(/JSON/i);
    expect(ls.stderr).not.toContain('internal error');

    const add = await cli('allow', 'add', 'ghcr.io/x/y:v1');
    expectRc(add, 1);
    expect(add.stderr).toContain(`allowlist file ${file} is not usable`);
    expect(add.stderr).toMatch(/JSON/i);
    expect(add.stderr).not.toContain('internal error');
    expect(await readFile(file, 'utf8')).toBe('{"version": 1, "rules": ['); // the operator's file is left alone

    const status = await cli('status');
    expectRc(status, 0);
    expect(status.stdout).toContain('allowlist:  1 rule(s)');
    expect(status.stdout).toContain(`warning: allowlist file ${file} is not usable`);
    expect(server.stdout() + server.stderr()).toContain('allowlist file is not usable; the last good rules stay in force');
  });
});
