// What the live allowlist needs from wherever its rule records persist (store/fs fills it with a locked JSON
// file), and how it reports a document it cannot use.
import type { RuleRecord } from './allowlist-file.js';

/** The allowlist document as written: `{"version":1,"rules":[...]}`. */
export interface AllowlistDocument {
  version: 1;
  rules: RuleRecord[];
}

export interface DocumentWatchOptions {
  debounceMs?: number;
  pollMs?: number;
}

/** A watch on the document; settle() records its current state as known (after our own write or read). */
export interface DocumentWatch {
  settle(): Promise<void>;
  close(): void;
}

/** Where the rule records persist; implemented by the store (store/fs: allowlist.json + a lock file). */
export interface AllowlistStorage {
  /** Names the document in messages and problem reports (the file path on fs). */
  readonly location: string;
  /** Runs `fn` holding the document's cross-process lock. */
  locked<T>(fn: () => Promise<T>): Promise<T>;
  /** The parsed document (`null` when it holds null), undefined when absent; throws when unreadable. */
  read(): Promise<unknown>;
  /** Replaces the document atomically and durably. */
  /** `change` says who, for a store that keeps a history (a removal carries no record naming them). */
  write(doc: AllowlistDocument, change?: AllowlistChange): Promise<void>;
  /** Calls `onChange` (one at a time; a throw means try again later) when the document changes. */
  watch(onChange: () => Promise<void>, opts?: DocumentWatchOptions): DocumentWatch;
  /** Whether an error means the lock was held too long by someone else. */
  isLockTimeout(err: unknown): err is Error;
}

/** Why the file on disk is not what is enforced: the last good rules stay in force meanwhile. */
export interface AllowlistProblem {
  file: string;
  /** What is wrong with it (a JSON parse error, every invalid record). */
  message: string;
  /** ISO 8601: when sluice first found the file unusable. */
  since: string;
}

export type WatchLog = (level: 'info' | 'warn', msg: string, fields: Record<string, unknown>) => void;

/** Who made an edit, for a store that keeps a history. */
export interface AllowlistChange {
  by?: string;
}
