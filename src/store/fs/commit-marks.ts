// The gc/commit gate on one host's folder: each process committing holds a mark file `<pid>-<id>.mark` in
// `commits/`; gc takes `commits/gc.lock` (filelock.ts: a dead holder's lock is broken) and waits for the marks.
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommitWaitError, type CommitLocks, type HeldLock } from '../commit-gate.js';
import { isNotFound } from '../local/dirs.js';
import { withFileLock } from './filelock.js';

/** A gc's lock is broken only when its process is gone: a long sweep is no reason to take it away. */
const GC_STALE_MS = 7 * 24 * 3600 * 1000;
const MAX_POLL_MS = 50;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid a mark or lock file names, or undefined when it names none (not yet written, or garbage). */
async function pidIn(file: string): Promise<number | undefined | 'gone'> {
  try {
    const value: unknown = JSON.parse(await readFile(file, 'utf8'));
    const pid = typeof value === 'object' && value !== null ? (value as { pid?: unknown }).pid : undefined;
    return typeof pid === 'number' ? pid : undefined;
  } catch (e) {
    return isNotFound(e) ? 'gone' : undefined;
  }
}

export class FsCommitLocks implements CommitLocks {
  private readonly gcFile: string;

  constructor(private readonly dir: string) {
    this.gcFile = join(dir, 'gc.lock');
  }

  async mark(): Promise<HeldLock> {
    await mkdir(this.dir, { recursive: true });
    const file = join(this.dir, `${process.pid}-${randomUUID()}.mark`);
    // Written aside and renamed: gc never reads a half-written mark (it would have to wait for it, not knowing whose).
    await writeFile(`${file}.tmp`, JSON.stringify({ pid: process.pid, time: new Date().toISOString() }));
    await rename(`${file}.tmp`, file);
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        await unlink(file).catch(() => undefined);
      },
    };
  }

  async gcPending(): Promise<boolean> {
    const pid = await pidIn(this.gcFile);
    // A lock file not written yet is a gc starting: pending. One whose process is gone will be broken by the next gc.
    return pid !== 'gone' && (pid === undefined || pidAlive(pid));
  }

  async gcDone(): Promise<void> {
    for (let pollMs = 2; await this.gcPending(); pollMs = Math.min(pollMs * 2, MAX_POLL_MS)) await sleep(pollMs);
  }

  async exclusive<T>(waitMs: number, fn: () => Promise<T>, onWaiting?: () => void): Promise<T> {
    await mkdir(this.dir, { recursive: true });
    const deadline = Date.now() + waitMs;
    return withFileLock(this.gcFile, async () => {
      await this.drainMarks(deadline, waitMs, onWaiting);
      return fn();
    }, { lockTimeoutMs: waitMs, staleLockMs: GC_STALE_MS });
  }

  /** Waits until no live process holds a mark; the marks of processes that died are removed. */
  private async drainMarks(deadline: number, waitMs: number, onWaiting?: () => void): Promise<void> {
    for (let pollMs = 2, first = true; ; pollMs = Math.min(pollMs * 2, MAX_POLL_MS), first = false) {
      const live: number[] = [];
      for (const f of await readdir(this.dir)) {
        if (!f.endsWith('.mark')) continue;
        const pid = await pidIn(join(this.dir, f));
        if (pid === 'gone') continue;
        if (pid === undefined || pidAlive(pid)) live.push(pid ?? -1);
        else await unlink(join(this.dir, f)).catch(() => undefined);
      }
      if (live.length === 0) return;
      if (first) onWaiting?.();
      if (Date.now() >= deadline) throw new CommitWaitError(waitMs, `pid ${[...new Set(live)].join(', ')}`);
      await sleep(pollMs);
    }
  }
}
