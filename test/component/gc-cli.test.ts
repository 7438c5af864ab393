// `sluice gc` as an operator runs it with no server up: --dry-run --json lists what would go and removes
// nothing, then gc removes it and says how much; a stray argument is a usage error (exit 2).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GcReport } from '../../src/jobs/gc.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';
import { MediaType, seededBytes, sha256 } from '../kit/oci.js';

describe('sluice gc (no server running)', () => {
  let dir: string;
  let config: string;
  let storage: string;
  const digests: string[] = [];
  let bytes = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-gc-cli-'));
    storage = join(dir, 'data');
    const store = await openStore({ storage });
    const layer = seededBytes(10_000, 'gc-cli');
    const cfg = Buffer.from('{"os":"linux","architecture":"amd64"}');
    await store.putBlob(layer, { digest: sha256(layer) });
    await store.putBlob(cfg, { digest: sha256(cfg) });
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256(cfg), size: cfg.length },
      layers: [{ mediaType: MediaType.ociLayer, digest: sha256(layer), size: layer.length }],
    }));
    const m = await store.putManifest(body, MediaType.ociManifest);
    await store.linkManifest('ghcr.io', 'gone/app', m);
    await store.setTag('ghcr.io', 'gone/app', '1', m.digest);
    await store.close();
    digests.push(m.digest, sha256(cfg), sha256(layer));
    bytes = body.length + cfg.length + layer.length;
    config = join(dir, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml(storage, { extra: { gcGrace: 0 } }));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const present = async (): Promise<boolean[]> => {
    const store = await openStore({ storage });
    try {
      return await Promise.all(digests.map(async (d) => (await store.stat(d)) !== undefined));
    } finally {
      await store.close();
    }
  };

  it('--dry-run --json lists the image no rule keeps and removes nothing', async () => {
    const r = await runSluice(['gc', '--dry-run', '--json', '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('collecting garbage in this process');
    const report = JSON.parse(r.stdout) as GcReport;
    expect(report.dryRun).toBe(true);
    expect(report.swept.map((b) => b.digest).sort()).toEqual([...digests].sort());
    expect(report.sweptBytes).toBe(bytes);
    expect(await present()).toEqual([true, true, true]);
  });

  it('gc removes them, and the tag pointing at them', async () => {
    const r = await runSluice(['gc', '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`removed ${digests[2]}`);
    expect(r.stdout).toContain('removed tag ghcr.io/gone/app:1');
    expect(r.stdout).toContain(`gc finished: 3 blob(s)`);
    expect(r.stdout).toContain(`(${bytes} bytes) removed`);
    expect(await present()).toEqual([false, false, false]);
    const again = await runSluice(['gc', '--json', '--config', config]);
    expect((JSON.parse(again.stdout) as GcReport).swept).toEqual([]);
  });

  it('a stray argument is a usage error', async () => {
    const r = await runSluice(['gc', 'now', '--config', config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('gc takes no arguments');
  });
});
