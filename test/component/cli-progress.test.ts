// Long commands draw a progress line on stderr only when it is a terminal: under a pseudo-terminal (script(1))
// `sluice verify`, `sluice gc` and `sluice export` redraw "done/total blobs, bytes" in place and clear it; piped,
// or with --json, stderr carries no progress and no terminal escapes.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { run, which } from '../helpers/binaries.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { runSluice, SLUICE_MAIN, sluiceConfigYaml } from '../helpers/sluice.js';
import { formatBytes } from '../../src/cli/commands.js';
import { MediaType, seededBytes, sha256 } from '../kit/oci.js';

const hasScript = which('script') !== undefined;
if (!hasScript) {
  if (process.env.CI === 'true') throw new Error('the CLI progress suite needs script(1) (CI=true, so not skipping): apt-get install -y bsdutils');
  console.warn(`\n${'!'.repeat(78)}\n!!! SKIPPING the CLI progress suite: missing script\n!!! install with apt-get install -y bsdutils\n${'!'.repeat(78)}\n`);
}

const ESC = '\x1b[';

describe.runIf(hasScript)('progress on a terminal, silence otherwise', () => {
  let dir: string;
  let config: string;
  let totalBytes = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-progress-'));
    const storage = join(dir, 'data');
    const store = await openStore({ storage });
    // An image of three layers: five blobs with its config and manifest.
    const layers = [0, 1, 2].map((i) => seededBytes(50_000, `progress-${i}`));
    const cfg = Buffer.from('{"os":"linux","architecture":"amd64"}');
    for (const b of [...layers, cfg]) await store.putBlob(b, { digest: sha256(b) });
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256(cfg), size: cfg.length },
      layers: layers.map((l) => ({ mediaType: MediaType.ociLayer, digest: sha256(l), size: l.length })),
    }));
    const m = await store.putManifest(body, MediaType.ociManifest);
    await store.linkManifest('ghcr.io', 'progress/app', m);
    await store.setTag('ghcr.io', 'progress/app', '1', m.digest);
    await store.close();
    totalBytes = body.length + cfg.length + 150_000;
    config = join(dir, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml(storage, { extra: { gcGrace: 0 } }));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs sluice with a pseudo-terminal for stdout and stderr (both end up in script's output). */
  const onTerminal = (...args: string[]): ReturnType<typeof run> =>
    run('script', ['-qec', [process.execPath, SLUICE_MAIN, ...args, '--config', config].join(' '), '/dev/null'], { timeoutMs: 60_000 });

  it('verify: a line of blobs and bytes redrawn in place, then cleared; the report follows', async () => {
    const r = await onTerminal('verify');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain(`\r${ESC}Kverify  5/5 blobs  ${formatBytes(totalBytes)} of ${formatBytes(totalBytes)}`);
    expect(r.stdout).toContain(`\r${ESC}Kchecked 5 blobs (${totalBytes} bytes)`);
  });

  it('gc (no server): the line walks through the blobs it looks at', async () => {
    const r = await onTerminal('gc', '--dry-run');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/\r\x1b\[Kgc {2}\d\/5 blobs.*looking for unused blobs/);
    expect(r.stdout).toContain('dry run: 5 blob(s)');
  });

  it('export: blobs and bytes of the bundle', async () => {
    const r = await onTerminal('export', join(dir, 'out'), 'ghcr.io/progress/app:1');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain(`\r${ESC}Kexport  5/5 blobs  ${formatBytes(totalBytes)} of ${formatBytes(totalBytes)}`);
    expect(r.stdout).toContain('exported ghcr.io/progress/app:1');
  });

  it('import: blobs and bytes of each image as they are verified', async () => {
    expect((await runSluice(['export', join(dir, 'bundle'), 'ghcr.io/progress/app:1', '--config', config])).code).toBe(0);
    const r = await onTerminal('import', join(dir, 'bundle'));
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/\r\x1b\[Kimport {2}5\/5 blobs {2}\S+ \S+ of \S+ \S+ .*ghcr\.io\/progress\/app:1/);
    expect(r.stdout).toContain('imported ghcr.io/progress/app:1');
  });

  it('sync (no server): references done of those planned, bytes fetched, the reference', async () => {
    const up = await new MiniUpstream().start();
    try {
      up.addImage('progress/sync', 'v1', [seededBytes(100_000, 'sync-1'), seededBytes(100_000, 'sync-2')]);
      const syncConfig = join(dir, 'sync.yaml');
      await writeFile(syncConfig, sluiceConfigYaml(join(dir, 'sync-data'), {
        windows: 'always', allowlist: ['ghcr.io/progress/sync:v1'], upstreams: { 'ghcr.io': { url: up.url } },
      }));
      const r = await run('script', ['-qec', [process.execPath, SLUICE_MAIN, 'sync', '--config', syncConfig].join(' '), '/dev/null'], { timeoutMs: 60_000 });
      expect(r.code, r.stdout).toBe(0);
      expect(r.stdout).toMatch(/\r\x1b\[Ksync {2}1\/1 references {2}195\.\d KiB/);
      expect(r.stdout).toContain('fetched         ghcr.io/progress/sync:v1');
    } finally {
      await up.stop();
    }
  });

  it('with --json, or with stderr not a terminal, nothing of it is written', async () => {
    const json = await onTerminal('verify', '--json');
    expect(json.code).toBe(0);
    expect(json.stdout).not.toContain(`${ESC}K`);
    const piped = await runSluice(['verify', '--config', config]);
    expect(piped.code).toBe(0);
    expect(piped.stderr).toBe('');
    expect(piped.stdout).not.toContain(ESC);
  });
});
