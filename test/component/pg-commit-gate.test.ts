// The gc/commit gate across replicas (store/pg/commit-locks.ts) against the real PostgreSQL: gc on one replica
// waits for a commit on another, a commit waits for a gc under way, a gc that waits too long gives up, and a
// committing replica that dies frees the gc at once.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type pg from 'pg';
import { CommitGate, CommitWaitError } from '../../src/store/commit-gate.js';
import { pgReplicas, settledState as state, type PgReplicas } from '../helpers/pg-replicas.js';
import { requireServices } from '../helpers/services.js';

const ok = requireServices(['postgres'], 'test/component/pg-commit-gate.test.ts');

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe.skipIf(!ok)('the gc/commit gate on PostgreSQL', () => {
  let replicas: PgReplicas;
  let ga: CommitGate;
  let gb: CommitGate;
  let probe: pg.Client;
  beforeAll(async () => {
    replicas = await pgReplicas();
    probe = replicas.probe;
    ga = new CommitGate(replicas.a.commitLocks);
    gb = new CommitGate(replicas.b.commitLocks);
  });
  afterAll(async () => replicas?.close());

  /** A commit on replica a that has entered the gate and stays in until `endCommit` is resolved. */
  async function commitUnderWay(): Promise<{ commit: Promise<void>; endCommit: { resolve: () => void } }> {
    const endCommit = deferred();
    const entered = deferred();
    const commit = ga.commit(async () => {
      entered.resolve();
      await endCommit.promise;
    });
    await entered.promise;
    return { commit, endCommit };
  }

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
    const { commit, endCommit } = await commitUnderWay();
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
    const { commit, endCommit } = await commitUnderWay();
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

  test('an allowlist edit and a commit go on while a gc holds the gate: the gate shares no lock with the allowlist', async () => {
    const inGc = deferred();
    const endGc = deferred();
    const gc = gb.exclusive(10_000, async () => {
      inGc.resolve();
      await endGc.promise;
    });
    await inGc.promise;
    try {
      // The edit takes the allowlist's own lock (10 s lock_timeout): a gc running meanwhile must not hold it.
      const edit = replicas.a.state.allowlist.locked(async () => {
        await replicas.a.state.allowlist.read();
        return 'edited';
      });
      await expect(edit).resolves.toBe('edited');
    } finally {
      endGc.resolve();
      await gc;
    }
    // And an allowlist edit under way is no gc: a commit starting meanwhile does not wait for it.
    const editing = deferred();
    const endEdit = deferred();
    const edit = replicas.a.state.allowlist.locked(async () => {
      editing.resolve();
      await endEdit.promise;
    });
    await editing.promise;
    try {
      expect(await replicas.b.commitLocks.gcPending()).toBe(false);
    } finally {
      endEdit.resolve();
      await edit;
    }
  }, 30_000);
});
