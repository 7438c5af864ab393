// Notices changes to one file made behind sluice's back: fs.watch on its folder (a rename-replace, as
// `jq … > tmp && mv tmp file` does, swaps the inode, which a watch on the file itself would miss), debounced,
// plus a slow stat poll in case an event is lost. A change is a new (inode, size, mtime, ctime) signature;
// the owner calls settle() after writing the file itself, so its own writes are not taken for edits.
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

export interface FileWatchOptions {
  debounceMs?: number;
  pollMs?: number;
}

async function signature(file: string): Promise<string> {
  try {
    const s = await stat(file, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch {
    return 'missing';
  }
}

export class FileWatch {
  private known: string | undefined;
  private watcher: FSWatcher | undefined;
  private readonly poll: NodeJS.Timeout;
  private debounce: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;

  /** `onChange` runs at most once at a time; when it throws, the next check tries again. */
  constructor(
    private readonly file: string,
    private readonly onChange: () => Promise<void>,
    private readonly opts: FileWatchOptions = {},
  ) {
    try {
      this.watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(file)) this.schedule();
      });
      this.watcher.on('error', () => this.watcher?.close()); // the folder went away; the poll carries on
    } catch {
      this.watcher = undefined; // no inotify (or similar) here: the poll alone
    }
    this.poll = setInterval(() => this.schedule(0), opts.pollMs ?? 1_000);
    this.poll.unref();
  }

  /** Records the file as it is now as known (call after writing it, or after reading it). */
  async settle(): Promise<void> {
    this.known = await signature(this.file);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.poll);
    clearTimeout(this.debounce);
    this.watcher?.close();
  }

  private schedule(delayMs = this.opts.debounceMs ?? 50): void {
    if (this.closed) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.check(), delayMs);
    this.debounce.unref();
  }

  private async check(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.checkOnce();
    await this.running;
    this.running = undefined;
    if (this.again && !this.closed) {
      this.again = false;
      await this.check();
    }
  }

  private async checkOnce(): Promise<void> {
    const now = await signature(this.file);
    if (now === this.known || this.closed) return;
    this.known = now;
    await this.onChange().catch(() => {
      this.known = undefined;
    });
  }
}
