// Cross-process mutual exclusion for editing one store file: an O_EXCL lock file holding pid + time,
// broken when its pid is dead or it is older than staleMs; callers in the same process queue in memory.

import { randomUUID } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { DocumentBusyError } from '../ports.js';

export interface FileLockOptions {
  /** Give up acquiring after this long (default 10 s). */
  lockTimeoutMs?: number;
  /** A lock older than this is broken even if its pid still runs (default 30 s). */
  staleLockMs?: number;
}

/** The fs form of the port's "document busy". */
export class LockTimeoutError extends DocumentBusyError {
  constructor(
    readonly lockPath: string,
    holder: string,
  ) {
    super(`could not acquire lock ${lockPath} (held by ${holder}); if no sluice process is running, delete it`);
    this.name = 'LockTimeoutError';
  }
}

interface LockContent {
  pid: number;
  time: string;
  id: string;
}

/** In-process FIFO per lock path, so callers in one process do not poll the file against each other. */
const queues = new Map<string, Promise<void>>();

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const codeOf = (err: unknown): string | undefined =>
  err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;

/** Runs `fn` while holding `lockPath`; the lock is released (if still ours) however `fn` ends. */
export async function withFileLock<T>(lockPath: string, fn: () => Promise<T>, opts: FileLockOptions = {}): Promise<T> {
  const prev = queues.get(lockPath) ?? Promise.resolve();
  let release = (): void => undefined;
  const mine = new Promise<void>((resolve) => (release = resolve));
  const tail = prev.then(() => mine);
  queues.set(lockPath, tail);
  await prev;
  try {
    const content = await acquire(lockPath, opts);
    try {
      return await fn();
    } finally {
      await releaseIfOurs(lockPath, content);
    }
  } finally {
    release();
    if (queues.get(lockPath) === tail) queues.delete(lockPath);
  }
}

async function acquire(lockPath: string, opts: FileLockOptions): Promise<string> {
  const timeoutMs = opts.lockTimeoutMs ?? 10_000;
  const staleMs = opts.staleLockMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let backoffMs = 2;
  for (;;) {
    const lock: LockContent = { pid: process.pid, time: new Date().toISOString(), id: randomUUID() };
    const content = JSON.stringify(lock);
    try {
      const handle = await open(lockPath, 'wx');
      try {
        await handle.writeFile(content);
      } finally {
        await handle.close();
      }
      return content;
    } catch (err) {
      if (codeOf(err) !== 'EEXIST') throw err;
    }
    const holder = await inspect(lockPath, staleMs);
    if (holder.stale) {
      await breakStale(lockPath, holder.content);
      continue;
    }
    if (Date.now() >= deadline) throw new LockTimeoutError(lockPath, holder.description);
    await sleep(backoffMs + Math.random() * backoffMs);
    backoffMs = Math.min(backoffMs * 2, 50);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return codeOf(err) === 'EPERM'; // exists, owned by someone else
  }
}

interface Holder {
  stale: boolean;
  content: string | undefined;
  description: string;
}

async function inspect(lockPath: string, staleMs: number): Promise<Holder> {
  let content: string;
  let mtimeMs: number;
  try {
    [content, mtimeMs] = await Promise.all([readFile(lockPath, 'utf8'), stat(lockPath).then((s) => s.mtimeMs)]);
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return { stale: true, content: undefined, description: 'nobody' };
    throw err;
  }
  const parsed = parseLock(content);
  if (parsed === undefined) {
    // Just created and not yet written, or garbage: judge by the file's age alone.
    return { stale: Date.now() - mtimeMs > staleMs, content, description: 'an unreadable lock file' };
  }
  const ageMs = Date.now() - Date.parse(parsed.time);
  const stale = !pidAlive(parsed.pid) || ageMs > staleMs;
  return { stale, content, description: `pid ${parsed.pid} since ${parsed.time}` };
}

function parseLock(content: string): LockContent | undefined {
  try {
    const value: unknown = JSON.parse(content);
    if (typeof value !== 'object' || value === null) return undefined;
    const { pid, time, id } = value as Record<string, unknown>;
    if (typeof pid !== 'number' || typeof time !== 'string' || typeof id !== 'string') return undefined;
    if (Number.isNaN(Date.parse(time))) return undefined;
    return { pid, time, id };
  } catch {
    return undefined;
  }
}

/**
 * Removes a stale lock without deleting a fresh one that replaced it after we looked: rename is atomic,
 * so we move whatever is there aside, and put it back if it is not the one we judged stale.
 */
async function breakStale(lockPath: string, judged: string | undefined): Promise<void> {
  if (judged === undefined) return; // it vanished: just retry
  const aside = `${lockPath}.stale-${process.pid}-${randomUUID()}`;
  try {
    await rename(lockPath, aside);
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return;
    throw err;
  }
  const moved = await readFile(aside, 'utf8').catch(() => undefined);
  if (moved !== judged) {
    await link(aside, lockPath).catch(() => undefined); // someone else already holds a newer lock
  }
  await unlink(aside).catch(() => undefined);
}

async function releaseIfOurs(lockPath: string, content: string): Promise<void> {
  const current = await readFile(lockPath, 'utf8').catch(() => undefined);
  if (current === content) await unlink(lockPath).catch(() => undefined);
}
