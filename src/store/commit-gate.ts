// The gc/commit gate: a committer (import, sync, a pull that tags) holds it shared while it checks, links and tags;
// gc holds it alone from its mark to the end of its sweep, so it never removes what is being committed. It spans
// processes and replicas through CommitLocks (store/fs: mark files and a lock file; store/pg: advisory locks).

export interface HeldLock {
  /** Harmless more than once. */
  release(): Promise<void>;
}

/** What a backend provides; CommitGate adds the in-process counting on top. */
export interface CommitLocks {
  /** Marks commits under way in this process (one mark however many): gc waits until every mark is gone. */
  mark(): Promise<HeldLock>;
  /** Whether a gc holds the gate or has announced it wants it. */
  gcPending(): Promise<boolean>;
  /** Resolves once no gc holds or wants the gate. */
  gcDone(): Promise<void>;
  /**
   * Announces gc (commits starting from now on wait), waits until every mark is gone, runs `fn`, then lets
   * commits go on. Waiting longer than `waitMs` for another gc or for the marks throws, and nothing runs.
   * `onWaiting` is called once if it has to wait for marks (commits under way).
   */
  exclusive<T>(waitMs: number, fn: () => Promise<T>, onWaiting?: () => void): Promise<T>;
}

export class CommitWaitError extends Error {
  constructor(waitedMs: number, holders: string) {
    super(`garbage collection waited ${Math.round(waitedMs / 1000)}s for commits under way (${holders}) and gave up; nothing was removed, run it again`);
    this.name = 'CommitWaitError';
  }
}

export class CommitGate {
  private count = 0;
  private held: Promise<HeldLock> | undefined;
  private waiting: Promise<void> | undefined;
  /** Commits of this process waiting for a gc to end, and the gc runs of this process waiting for them to enter. */
  private waiters = 0;
  private readonly gcsWaiting: Array<() => void> = [];

  constructor(private readonly locks: CommitLocks) {}

  /**
   * Runs `fn` as a commit: no gc sweeps while it runs, and it starts only when no gc is under way. `fn` must
   * re-check (with the backend, not a memo) that what it links and tags is still stored: a gc may have ended
   * just before. Commits do not nest.
   */
  async commit<T>(fn: () => Promise<T>): Promise<T> {
    await this.enter();
    try {
      return await fn();
    } finally {
      await this.leave();
    }
  }

  /**
   * gc's mark and sweep: see CommitLocks.exclusive. Commits of this process that waited for the last gc go first,
   * so gc run back to back (a schedule, an operator's loop) cannot starve them.
   */
  async exclusive<T>(waitMs: number, fn: () => Promise<T>, onWaiting?: () => void): Promise<T> {
    while (this.waiters > 0) await new Promise<void>((resolve) => this.gcsWaiting.push(resolve));
    return this.locks.exclusive(waitMs, fn, onWaiting);
  }

  /** Marks first, then looks for a gc (gc announces first, then looks for marks): one of the two sees the other. */
  private async enter(): Promise<void> {
    let waited = false;
    try {
      for (;;) {
        this.count++;
        let pending: boolean;
        try {
          this.held ??= this.locks.mark();
          await this.held;
          pending = await this.locks.gcPending();
        } catch (e) {
          await this.leave();
          throw e;
        }
        if (!pending) return;
        await this.leave();
        if (!waited) this.waiters++;
        waited = true;
        this.waiting ??= this.locks.gcDone().finally(() => (this.waiting = undefined));
        await this.waiting;
      }
    } finally {
      if (waited && --this.waiters === 0) for (const wake of this.gcsWaiting.splice(0)) wake();
    }
  }

  private async leave(): Promise<void> {
    if (--this.count > 0) return;
    const held = this.held;
    this.held = undefined;
    const lock = await held?.catch(() => undefined);
    await lock?.release();
  }
}
