// The operator's manual window survives restarts: WindowState leaves persisting it to its owner, and this is
// what the owner needs from the store (store/fs: window.json beside the store) and the two ways it is used.
import type { ManualWindow, WindowState } from './state.js';

export interface ManualWindowStorage {
  /** Names the document in messages (the file path on fs). */
  readonly location: string;
  /** The persisted manual window; null when there is none or it cannot be read. */
  read(): Promise<ManualWindow | null>;
  /** Replaces the persisted manual window atomically. */
  write(manual: ManualWindow | null): Promise<void>;
  /** Shared stores (several replicas): calls `onChange` when another writer changed it; returns a stop function. */
  watch?(onChange: (manual: ManualWindow | null) => void): () => void;
}

/** Applies other writers' changes of the manual window to `state` as they land (a store that can tell). */
export function followManual(state: WindowState, storage: ManualWindowStorage): () => void {
  return storage.watch?.((m) => state.restore(m)) ?? (() => undefined);
}

/** Loads the persisted manual window into `state`. */
export async function restoreManual(state: WindowState, storage: ManualWindowStorage): Promise<void> {
  state.restore(await storage.read());
}

/**
 * Writes every change of the manual window, one after another; a failure goes to `onError`, never fatal.
 * `idle()` resolves once every change so far is written (a closing app waits for it); `recorded()` rejects with
 * the failure of the latest change (what an operator who made it must be told).
 */
export function recordManual(
  state: WindowState,
  storage: ManualWindowStorage,
  onError: (e: unknown) => void,
): { off: () => void; idle: () => Promise<void>; recorded: () => Promise<void> } {
  let last = Promise.resolve();
  let latest = Promise.resolve();
  const off = state.onChange((m) => {
    latest = last.then(() => storage.write(m));
    last = latest.catch(onError);
  });
  return { off, idle: () => last, recorded: () => latest };
}
