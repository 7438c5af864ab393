// gc across replicas on the real object store (Ceph RGW) and PostgreSQL: a blob goes only once it has been
// unreferenced for longer than gcGrace by the database's clock, not by the clock of the replica that runs gc.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { collectGarbage } from '../../src/jobs/gc.js';
import { Allowlist } from '../../src/policy/allowlist.js';
import { Ingest } from '../../src/store/ingest.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { freshBucket, freshDatabase, requireServices, s3Config } from '../helpers/services.js';
import { sha256 } from '../kit/oci.js';

const ok = requireServices(['s3', 'postgres'], 'test/component/gc-cluster.test.ts');
const HOUR = 3_600_000;

async function put(store: Store, bytes: Buffer): Promise<string> {
  const w = new Ingest((v) => store.blobs.commit(v), await store.blobs.createSpool(bytes.length), { digest: sha256(bytes), sizeBytes: bytes.length });
  await w.write(bytes);
  return (await w.commit()).digest;
}

describe.skipIf(!ok)('gc across replicas (RGW + PostgreSQL)', () => {
  let dir: string;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let a: Store;
  let b: Store;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-gc-cluster-'));
    bucket = await freshBucket();
    db = await freshDatabase();
    const cfg = (name: string): Parameters<typeof openStore>[0] => ({ storage: join(dir, name), s3: s3Config(bucket.bucket), postgres: { url: db.url, poolSize: 2, connectTimeoutMs: 5000, queryTimeoutMs: 10_000, freshnessMs: 10_000 } });
    a = await openStore(cfg('a'));
    b = await openStore(cfg('b'));
  });
  afterEach(async () => {
    await a?.close();
    await b?.close();
    await bucket?.remove();
    await db?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  test('a replica whose clock runs hours ahead cannot cut the grace short: a blob goes once unreferenced longer than gcGrace by the database clock', async () => {
    const digest = await put(a, Buffer.from('an unreferenced layer'));
    const rules = await Allowlist.open(a.meta.state.allowlist);
    const fast = (): number => Date.now() + 2 * HOUR;
    const first = await collectGarbage(a, rules, { keep: 2, graceMs: HOUR, now: fast });
    expect(first.swept).toEqual([]);
    expect(first.spared).toBe(1);
    expect(await a.blobs.stat(digest)).toBeDefined();
    // The cluster's clock moves on past the grace (the mark made by the first run is now 61 minutes old).
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    await c.query(`UPDATE gc_marks SET marked_at = now() - interval '61 minutes' WHERE digest = $1`, [digest]);
    await c.end();
    expect((await collectGarbage(b, rules, { keep: 2, graceMs: HOUR, dryRun: true })).swept.map((s) => s.digest)).toEqual([]);
    const dry = await collectGarbage(b, rules, { keep: 2, graceMs: 0, dryRun: true });
    expect(dry.swept.map((s) => s.digest)).toEqual([digest]);
    const second = await collectGarbage(b, rules, { keep: 2, graceMs: HOUR, now: () => Date.now() + 2 * HOUR });
    expect(second.swept.map((s) => s.digest)).toEqual([digest]);
    expect(await a.blobs.stat(digest)).toBeUndefined();
  });
});
