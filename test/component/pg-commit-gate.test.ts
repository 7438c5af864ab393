// The gc/commit gate across replicas (store/pg/commit-locks.ts) against the real PostgreSQL: gc on one replica
// waits for a commit on another, a commit waits for a gc under way, a gc that waits too long gives up, and a
// committing replica that dies frees the gc at once.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { POSTGRES_BOUNDS } from '../../src/config/scale-out.js';
import pg from 'pg';
import { CommitGate, CommitWaitError } from '../../src/store/commit-gate.js';
import { PgMetadataStore } from '../../src/store/pg/metadata.js';
import { freshDatabase, requireServices } from '../helpers/services.js';

const ok = requireServices(['postgres'], 'test/component/pg-commit-gate.test.ts');

/** Resolves to 'pending' if `p` has not settled by the time a round trip to the database has. */
async function state(p: Promise<unknown>, db: pg.Client): Promise<string> {
  const settled = p.then(() => 'resolved', () => 'rejected');
  await db.query('SELECT 1');
  return Promise.race([settled, Promise.resolve('pending')]);
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe.skipIf(!ok)('the gc/commit gate on PostgreSQL', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let a: PgMetadataStore;
  let b: PgMetadataStore;
  let ga: CommitGate;
  let gb: CommitGate;
  let probe: pg.Client;
  beforeAll(async () => {
    db = await freshDatabase();
    [a, b] = await Promise.all([PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS }), PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS })]);
    ga = new CommitGate(a.commitLocks);
    gb = new CommitGate(b.commitLocks);
    probe = new pg.Client({ connectionString: db.url });
    await probe.connect();
  });
  afterAll(async () => {
    await probe?.end();
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  test('a gc on one replica waits for a commit on another, then runs', async () => {
    const order: string[] = [];
    const gcWaits = deferred();
    let gc: Promise<void> | undefined;
    await ga.commit(async () => {
      gc = gb.exclusive(10_000, async () => void order.push('gc'), gcWaits.resolve);
      await gcWaits.promise;
      expect(await state(gc, probe)).toBe('pending');
      order.push('commit');
    });
    await gc;
    expect(order).toEqual(['commit', 'gc']);
  });

  test('a commit on one replica waits for a gc under way on another, then runs', async () => {
    const order: string[] = [];
    const inGc = deferred();
    const endGc = deferred();
    const gc = gb.exclusive(10_000, async () => {
      inGc.resolve();
      await endGc.promise;
      order.push('gc');
    });
    await inGc.promise;
    const commit = ga.commit(async () => void order.push('commit'));
    expect(await state(commit, probe)).toBe('pending');
    endGc.resolve();
    await Promise.all([gc, commit]);
    expect(order).toEqual(['gc', 'commit']);
  });

  test('a gc that waits longer than it may for a commit gives up and runs nothing', async () => {
    const endCommit = deferred();
    const entered = deferred();
    const commit = ga.commit(async () => {
      entered.resolve();
      await endCommit.promise;
    });
    await entered.promise;
    const gcWaits = deferred();
    let ran = false;
    const gc = gb.exclusive(300, async () => void (ran = true), gcWaits.resolve);
    await expect(gc).rejects.toBeInstanceOf(CommitWaitError);
    endCommit.resolve();
    await commit;
    expect(ran).toBe(false);
    await gb.exclusive(10_000, async () => undefined); // nothing is left held
  });

  test('a committing replica that dies frees the gc at once', async () => {
    const endCommit = deferred();
    const entered = deferred();
    const commit = ga.commit(async () => {
      entered.resolve();
      await endCommit.promise;
    });
    await entered.promise;
    const gcWaits = deferred();
    let ran = false;
    const gc = gb.exclusive(30_000, async () => void (ran = true), gcWaits.resolve);
    await gcWaits.promise;
    // What kill -9 does to a replica's sessions: PostgreSQL ends the backend holding the commit mark.
    const { rows } = await probe.query<{ pid: number }>(
      "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock' AND pid <> pg_backend_pid()");
    expect(rows).toHaveLength(1);
    await probe.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
    await gc;
    expect(ran).toBe(true);
    endCommit.resolve();
    await commit; // its session is gone: ending the commit must not throw
  });
});
