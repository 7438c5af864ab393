// The denied log: aggregation per (host, name, reference) and the LRU bound (over the in-memory store), flushing
// through lowdb and reloading, recovery from an unreadable file, and the suggested `sluice allow add` lines.

import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Low } from 'lowdb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DeniedLog, deniedReference, suggestRule, type DeniedStorage } from '../../src/policy/denied.js';
import { memoryStateDocuments, MemoryStateData } from '../../src/store/memory/state.js';
import { openDeniedFile } from '../../src/store/fs/denied-document.js';

const H1 = `sha256:${'a'.repeat(64)}`;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-denied-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
let seq = 0;
const freshFile = (): string => join(dir, `denied-${++seq}.json`);

/** The log's behaviour needs no file: the in-memory store's denied document (denied.json has its own tests below). */
const inMemory = (): DeniedStorage => memoryStateDocuments(new MemoryStateData()).denied;

/** A clock the test advances by hand, one second per reading unless set. */
function manualClock(): { now: () => Date } {
  let t = Date.parse('2025-03-01T00:00:00.000Z');
  return { now: () => new Date((t += 1000)) };
}

describe('DeniedLog', () => {
  it('aggregates per (host, name, reference) with count, first/last seen and last client', async () => {
    const log = await DeniedLog.open(inMemory(), { ...manualClock() });
    log.record({ host: 'ghcr.io', name: 'siderolabs/kubelet', reference: 'v1.35.0', client: '10.0.0.1' });
    log.record({ host: 'ghcr.io', name: 'siderolabs/kubelet', reference: 'v1.35.0', client: '10.0.0.2' });
    log.record({ host: 'ghcr.io', name: 'siderolabs/kubelet', reference: H1, client: '10.0.0.3' });
    log.record({ host: 'ghcr.io', name: 'siderolabs/kubelet', reference: 'v1.35.0' });
    expect(log.list()).toEqual([
      {
        host: 'ghcr.io',
        name: 'siderolabs/kubelet',
        reference: 'v1.35.0',
        count: 3,
        firstSeen: '2025-03-01T00:00:01.000Z',
        lastSeen: '2025-03-01T00:00:04.000Z',
        client: '10.0.0.2',
      },
      {
        host: 'ghcr.io',
        name: 'siderolabs/kubelet',
        reference: H1,
        count: 1,
        firstSeen: '2025-03-01T00:00:03.000Z',
        lastSeen: '2025-03-01T00:00:03.000Z',
        client: '10.0.0.3',
      },
    ]);
    await log.close();
  });

  it('stays bounded, evicting the least recently seen', async () => {
    const log = await DeniedLog.open(inMemory(), { maxEntries: 3, ...manualClock() });
    for (const ref of ['a', 'b', 'c']) log.record({ host: 'quay.io', name: 'x/y', reference: ref });
    log.record({ host: 'quay.io', name: 'x/y', reference: 'a' }); // a is now the most recent
    log.record({ host: 'quay.io', name: 'x/y', reference: 'd' }); // evicts b
    expect(log.list().map((e) => e.reference)).toEqual(['d', 'a', 'c']);
    expect(log.list()[1]?.count).toBe(2);
    await log.close();
  });

  it('flushes through lowdb and reloads in order, keeping the bound', async () => {
    const file = freshFile();
    const log = await openDeniedFile(file, { ...manualClock() });
    for (const ref of ['v1', 'v2', 'v3']) log.record({ host: 'docker.io', name: 'library/alpine', reference: ref });
    await log.flush();
    const stored = JSON.parse(await readFile(file, 'utf8')) as { version: number; entries: unknown[] };
    expect(stored.version).toBe(1);
    expect(stored.entries).toHaveLength(3);
    const again = await openDeniedFile(file);
    expect(again.list().map((e) => e.reference)).toEqual(['v3', 'v2', 'v1']);
    const small = await openDeniedFile(file, { maxEntries: 2 });
    expect(small.list().map((e) => e.reference)).toEqual(['v3', 'v2']);
    await Promise.all([log.close(), again.close(), small.close()]);
  });

  it('writes on its own at most once per flushMs, from a timer', async () => {
    const file = freshFile();
    const write = vi.spyOn(Low.prototype, 'write');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const log = await openDeniedFile(file, { flushMs: 1000 });
      log.record({ host: 'gcr.io', name: 'etcd-development/etcd', reference: 'v3.6.5' });
      log.record({ host: 'gcr.io', name: 'etcd-development/etcd', reference: 'v3.6.6' });
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(999);
      expect(write).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1);
      expect(write).toHaveBeenCalledTimes(1);
      await write.mock.results[0]?.value;
      expect(await readFile(file, 'utf8')).toContain('v3.6.6');
      await log.close();
      expect(write).toHaveBeenCalledTimes(1); // nothing new to write
    } finally {
      vi.useRealTimers();
      write.mockRestore();
    }
  });

  it('writes what is pending on close, and ignores records after it', async () => {
    const storage = inMemory();
    const log = await DeniedLog.open(storage, { flushMs: 60_000 });
    log.record({ host: 'gcr.io', name: 'x', reference: 'v1' });
    await log.close();
    expect((await DeniedLog.open(storage)).list()).toHaveLength(1);
    log.record({ host: 'gcr.io', name: 'x', reference: 'v2' });
    expect(log.list()).toHaveLength(1);
  });

  it('clear empties memory and file', async () => {
    const file = freshFile();
    const log = await openDeniedFile(file);
    log.record({ host: 'gcr.io', name: 'x', reference: 'v1' });
    await log.clear();
    expect(log.list()).toEqual([]);
    expect((await openDeniedFile(file)).list()).toEqual([]);
    await log.close();
  });

  it('moves an unreadable file aside instead of failing to start (it grants nothing)', async () => {
    const file = freshFile();
    await writeFile(file, '{"entries": [ {"host": 1} ]}');
    const log = await openDeniedFile(file);
    expect(log.list()).toEqual([]);
    expect(log.recoveredFrom).toMatch(/\.corrupt-/);
    expect(await readFile(log.recoveredFrom ?? '', 'utf8')).toContain('"host": 1');
    expect((await readdir(dir)).some((n) => n.startsWith('denied-') && n.includes('.corrupt-'))).toBe(true);
    await log.close();
  });
});

describe('suggestRule', () => {
  it.each([
    [{ host: 'ghcr.io', name: 'siderolabs/kubelet', reference: 'v1.35.0' }, 'sluice allow add ghcr.io/siderolabs/kubelet:v1.35.0'],
    [{ host: 'docker.io', name: 'library/alpine', reference: '3.20' }, 'sluice allow add docker.io/library/alpine:3.20'],
    [{ host: 'myreg.local:5000', name: 'team/app', reference: H1 }, `sluice allow add myreg.local:5000/team/app@${H1}`],
  ])('%j → %s', (entry, line) => {
    expect(suggestRule(entry)).toBe(line);
  });
});

describe('a refusal of the repository itself (tags/list, empty reference)', () => {
  const entry = { host: 'ghcr.io', name: 'siderolabs/installer', reference: '' };

  it('suggests no broken "name:" rule, only a comment naming both ways to allow it', () => {
    const line = suggestRule(entry);
    expect(line.startsWith('# ')).toBe(true);
    expect(line).not.toMatch(/installer:(\s|$)/);
    expect(line).toContain('sluice allow add ghcr.io/siderolabs/installer:TAG');
    expect(line).toContain('"sluice allow add ghcr.io/siderolabs/installer"');
  });

  it('is shown as the repository and its tags/list', () => {
    expect(deniedReference(entry)).toBe('ghcr.io/siderolabs/installer (tags/list)');
    expect(deniedReference({ ...entry, reference: 'v1' })).toBe('ghcr.io/siderolabs/installer:v1');
    expect(deniedReference({ ...entry, reference: H1 })).toBe(`ghcr.io/siderolabs/installer@${H1}`);
  });
});
