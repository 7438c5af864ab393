// The gc/commit gate's locks for an in-memory store: what the fs mark files and PostgreSQL advisory locks do across
// processes, done over one shared object (every Store over the same data is another "replica").
import { CommitWaitError, type CommitLocks, type HeldLock } from '../commit-gate.js';

export class MemoryCommitLocks implements CommitLocks {
  private marks = 0;
  private gc = false;
  private wakers: Array<() => void> = [];

  async mark(): Promise<HeldLock> {
    this.marks++;
    let held = true;
    return {
      release: async () => {
        if (!held) return;
        held = false;
        this.marks--;
        this.wake();
      },
    };
  }

  async gcPending(): Promise<boolean> {
    return this.gc;
  }

  async gcDone(): Promise<void> {
    while (this.gc) await this.changed();
  }

  async exclusive<T>(waitMs: number, fn: () => Promise<T>, onWaiting?: () => void): Promise<T> {
    const until = Date.now() + waitMs;
    while (this.gc) await this.changed(until, 'another gc');
    this.gc = true;
    try {
      if (this.marks > 0) onWaiting?.();
      while (this.marks > 0) await this.changed(until, `${this.marks} commit(s) in memory`);
      return await fn();
    } finally {
      this.gc = false;
      this.wake();
    }
  }

  /** Resolves at the next change; past `until`, throws the gc's give-up error naming what it waited for. */
  private changed(until?: number, holders = ''): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const left = until === undefined ? undefined : until - Date.now();
      if (left !== undefined && left <= 0) return reject(new CommitWaitError(0, holders));
      const timer = left === undefined ? undefined : setTimeout(() => reject(new CommitWaitError(left, holders)), left);
      this.wakers.push(() => {
        if (timer) clearTimeout(timer);
        resolve();
      });
    });
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const w of wakers) w();
  }
}
