// The state documents in memory (allowlist, denied log, manual window), shared by every instance over the same
// data: edits are serialised like the fs lock file, and another instance's allowlist write reaches its watchers.
import type { AllowlistChange, AllowlistDocument, AllowlistStorage, DocumentWatch } from '../../policy/allowlist.js';
import type { DeniedDocument, DeniedStorage } from '../../policy/denied.js';
import type { ManualWindowStorage } from '../../window/manual-store.js';
import type { ManualWindow } from '../../window/state.js';
import { DocumentBusyError, type StateDocuments } from '../ports.js';

/** The documents themselves, as last written (JSON text, so no caller shares an object with another). */
export class MemoryStateData {
  allowlist: string | undefined;
  denied: string | undefined;
  window: string | undefined;
  /** The allowlist's lock: edits queue behind each other. */
  allowlistQueue: Promise<unknown> = Promise.resolve();
  readonly allowlistWatchers = new Set<{ owner: object; onChange: () => Promise<void> }>();
}

class MemoryAllowlist implements AllowlistStorage {
  readonly location = 'memory:allowlist';

  constructor(private readonly data: MemoryStateData) {}

  locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.data.allowlistQueue.then(fn);
    this.data.allowlistQueue = run.catch(() => undefined);
    return run;
  }

  async read(): Promise<unknown> {
    return this.data.allowlist === undefined ? undefined : (JSON.parse(this.data.allowlist) as unknown);
  }

  async write(doc: AllowlistDocument, _change?: AllowlistChange): Promise<void> {
    this.data.allowlist = JSON.stringify(doc);
    for (const w of this.data.allowlistWatchers) if (w.owner !== this) void w.onChange().catch(() => undefined);
  }

  watch(onChange: () => Promise<void>): DocumentWatch {
    const entry = { owner: this, onChange };
    this.data.allowlistWatchers.add(entry);
    return { settle: async () => undefined, close: () => void this.data.allowlistWatchers.delete(entry) };
  }

  isLockTimeout(err: unknown): err is Error {
    return err instanceof DocumentBusyError;
  }
}

class MemoryDenied implements DeniedStorage {
  constructor(private readonly data: MemoryStateData) {}

  async read(): Promise<unknown> {
    return this.data.denied === undefined ? null : (JSON.parse(this.data.denied) as unknown);
  }

  async write(doc: DeniedDocument, maxEntries: number): Promise<void> {
    this.data.denied = JSON.stringify({ ...doc, entries: doc.entries.slice(-maxEntries) });
  }

  /** A document held as JSON text of what was written is never unreadable. */
  async setAside(): Promise<string> {
    throw new Error('the in-memory denied log cannot be unreadable');
  }
}

class MemoryWindow implements ManualWindowStorage {
  readonly location = 'memory:window';

  constructor(private readonly data: MemoryStateData) {}

  async read(): Promise<ManualWindow | null> {
    return this.data.window === undefined ? null : (JSON.parse(this.data.window) as ManualWindow | null);
  }

  async write(manual: ManualWindow | null): Promise<void> {
    this.data.window = JSON.stringify(manual);
  }
}

export function memoryStateDocuments(data: MemoryStateData): StateDocuments {
  return { allowlist: new MemoryAllowlist(data), denied: new MemoryDenied(data), window: new MemoryWindow(data) };
}
