// The FlightLeases conformance suite: one holder per digest among replicas, a waiter woken by the release (never
// by polling), a wait bounded by its timeout and cancelled by its signal. Each backend's own test file calls it
// (store-pg, store-memory); what only one backend can do (a PostgreSQL session dying) stays in its file.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { FlightLeases } from '../../../src/store/ports.js';

export interface OpenedLeases {
  /** Two replicas' leases over the same storage. */
  a: FlightLeases;
  b: FlightLeases;
  /**
   * Resolves once anything the backend was going to do on its own has been done (a round trip to the
   * database; a turn of the event loop in memory): a wait still pending then is really waiting.
   */
  settled(): Promise<void>;
  close(): Promise<void>;
}

const D = `sha256:${'ab'.repeat(32)}`;

export function flightLeasesConformance(name: string, open: () => Promise<OpenedLeases>): void {
  describe(`FlightLeases conformance: ${name}`, () => {
    let t: OpenedLeases;
    beforeAll(async () => {
      t = await open();
    });
    afterAll(async () => {
      await t?.close();
    });

    /** 'pending' if `p` has not settled once the backend has. */
    async function state(p: Promise<unknown>): Promise<string> {
      const settled = p.then(() => 'resolved', () => 'rejected');
      await t.settled();
      return Promise.race([settled, Promise.resolve('pending')]);
    }

    test('a second replica waits for the holder and gets the lease the moment it is released', async () => {
      const held = await t.a.acquire(D, 10_000);
      const waiting = t.b.acquire(D, 10_000);
      expect(await state(waiting)).toBe('pending');
      await held.release();
      const next = await waiting;
      await next.release();
      await next.release(); // harmless twice
    });

    test('leases on different digests do not wait for each other', async () => {
      const held = await t.a.acquire(D, 10_000);
      const other = await t.b.acquire(`sha256:${'cd'.repeat(32)}`, 10_000);
      await other.release();
      await held.release();
    });

    test('a wait is bounded by its timeout and cancelled by its signal', async () => {
      const held = await t.a.acquire(D, 10_000);
      await expect(t.b.acquire(D, 50)).rejects.toThrow('another sluice replica is still downloading this blob');
      const stop = new AbortController();
      const waiting = t.b.acquire(D, 10_000, stop.signal);
      expect(await state(waiting)).toBe('pending');
      stop.abort(new Error('shutting down'));
      await expect(waiting).rejects.toThrow('shutting down');
      await held.release();
      const again = await t.b.acquire(D, 1000);
      await again.release();
    });
  });
}
