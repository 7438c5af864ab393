// The denied log: every refusal counted in memory per (host, name, reference), bounded by evicting the
// least recently seen, written to a document the store provides (DeniedStorage; store/fs: denied.json) at
// most once per flushMs and on close (DESIGN §4).

export interface DeniedEntry {
  host: string;
  name: string;
  /** Tag or digest as requested; empty when the repository itself was refused (its tags/list). */
  reference: string;
  count: number;
  /** ISO 8601. */
  firstSeen: string;
  lastSeen: string;
  /** The last client refused: its address, then its mTLS subject or basic-auth user (`10.5.0.2 (cert CN=node1)`). */
  client?: string;
}

export interface DeniedRequest {
  host: string;
  name: string;
  reference: string;
  client?: string;
}

export interface DeniedLogOptions {
  maxEntries?: number;
  flushMs?: number;
  now?: () => Date;
  /** A background flush failed (the entries stay dirty and are retried); default: process warning. */
  onError?: (err: Error) => void;
}

/** The denied document as written: `{"version":1,"entries":[...]}`. */
export interface DeniedDocument {
  version: 1;
  entries: DeniedEntry[];
}

/**
 * How many distinct references the denied log keeps, in memory and in its storage alike (a flood of refusals
 * must not grow either): the least recently seen go first.
 */
export const DENIED_MAX_ENTRIES = 1000;

/** Where the denied log persists; implemented by the store (store/fs: denied.json beside the store). */
export interface DeniedStorage {
  /** The parsed document, undefined or null when absent; throws when unreadable. */
  read(): Promise<unknown>;
  /**
   * Stores the log. Storage several replicas add to (a database) keeps only the `maxEntries` most recently seen
   * references; a document written whole holds no more than `doc` does.
   */
  write(doc: DeniedDocument, maxEntries: number): Promise<void>;
  /** Moves an unreadable document out of the way (named with `stamp`); returns where it went. */
  setAside(stamp: string): Promise<string>;
}

const keyOf = (r: { host: string; name: string; reference: string }): string => `${r.host}/${r.name}\u0000${r.reference}`;

const isIso = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));

function toEntry(v: unknown): DeniedEntry | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const { host, name, reference, count, firstSeen, lastSeen, client } = v as Record<string, unknown>;
  if (typeof host !== 'string' || typeof name !== 'string' || typeof reference !== 'string') return undefined;
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1) return undefined;
  if (!isIso(firstSeen) || !isIso(lastSeen)) return undefined;
  if (client !== undefined && typeof client !== 'string') return undefined;
  return { host, name, reference, count, firstSeen, lastSeen, ...(client === undefined ? {} : { client }) };
}

function parseFile(raw: unknown): DeniedEntry[] | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const { entries } = raw as Record<string, unknown>;
  if (!Array.isArray(entries)) return undefined;
  const out: DeniedEntry[] = [];
  for (const item of entries) {
    const entry = toEntry(item);
    if (entry === undefined) return undefined;
    out.push(entry);
  }
  return out;
}

export class DeniedLog {
  /** Insertion order is recency order: least recently seen first. */
  private readonly entries = new Map<string, DeniedEntry>();
  private readonly maxEntries: number;
  private readonly flushMs: number;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private closed = false;
  private writing: Promise<void> = Promise.resolve();
  /** Set when the file was unreadable at open: it was moved aside to this path and the log starts empty. */
  recoveredFrom: string | undefined;

  private constructor(
    private readonly storage: DeniedStorage,
    private readonly opts: DeniedLogOptions,
  ) {
    this.maxEntries = Math.max(1, opts.maxEntries ?? DENIED_MAX_ENTRIES);
    this.flushMs = Math.max(0, opts.flushMs ?? 1000);
  }

  /**
   * Loads the document if present. Unlike the allowlist, an unreadable denied log is not a reason to refuse to
   * start (it grants nothing): it is set aside (fs: `<file>.corrupt-<time>`) and `recoveredFrom` says where.
   */
  static async open(storage: DeniedStorage, opts: DeniedLogOptions = {}): Promise<DeniedLog> {
    const log = new DeniedLog(storage, opts);
    let loaded: DeniedEntry[] | undefined;
    try {
      const raw: unknown = await storage.read();
      loaded = raw === null || raw === undefined ? [] : parseFile(raw);
    } catch {
      loaded = undefined;
    }
    if (loaded === undefined) {
      log.recoveredFrom = await storage.setAside(log.now().replace(/[:.]/g, '-'));
      loaded = [];
    }
    loaded.sort((a, b) => Date.parse(a.lastSeen) - Date.parse(b.lastSeen));
    for (const entry of loaded.slice(-log.maxEntries)) log.entries.set(keyOf(entry), entry);
    return log;
  }

  /** Synchronous and in memory: safe on the request path. */
  record(request: DeniedRequest): void {
    if (this.closed) return;
    const key = keyOf(request);
    const at = this.now();
    const previous = this.entries.get(key);
    if (previous !== undefined) this.entries.delete(key);
    const entry: DeniedEntry = {
      host: request.host,
      name: request.name,
      reference: request.reference,
      count: (previous?.count ?? 0) + 1,
      firstSeen: previous?.firstSeen ?? at,
      lastSeen: at,
    };
    const client = request.client ?? previous?.client;
    if (client !== undefined) entry.client = client;
    this.entries.set(key, entry);
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    this.markDirty();
  }

  /** How many distinct references are recorded (bounded by maxEntries). */
  get size(): number {
    return this.entries.size;
  }

  /** Most recently seen first. */
  list(): DeniedEntry[] {
    return [...this.entries.values()].reverse().map((e) => ({ ...e }));
  }

  /** Writes now if anything changed since the last write; writes are serialised. */
  flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const run = this.writing.then(() => this.write());
    this.writing = run.catch(() => undefined);
    return run;
  }

  async clear(): Promise<void> {
    this.entries.clear();
    this.dirty = true;
    await this.flush();
  }

  /** Stops recording and writes what is pending. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  private markDirty(): void {
    this.dirty = true;
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush().catch((err: unknown) => {
        const error = err instanceof Error ? err : new Error(String(err));
        if (this.opts.onError) this.opts.onError(error);
        else process.emitWarning(`denied log flush failed: ${error.message}`);
      });
    }, this.flushMs);
    this.timer.unref();
  }

  private async write(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    try {
      await this.storage.write({ version: 1, entries: [...this.entries.values()] }, this.maxEntries);
    } catch (err) {
      this.dirty = true;
      throw err;
    }
  }

  private now(): string {
    return (this.opts.now?.() ?? new Date()).toISOString();
  }
}

type Refused = Pick<DeniedEntry, 'host' | 'name' | 'reference'>;

/** What was refused, as a reference: `host/name:tag`, `host/name@sha256:…`, or `host/name (tags/list)`. */
export function deniedReference(entry: Refused): string {
  const repository = `${entry.host}/${entry.name}`;
  if (entry.reference === '') return `${repository} (tags/list)`;
  return `${repository}${entry.reference.startsWith('sha256:') ? '@' : ':'}${entry.reference}`;
}

/**
 * A ready-to-paste command allowing what was refused: `@sha256:…` for a digest, `:tag` otherwise. A refused
 * tags/list names no image, so it gets a shell comment instead: which tag to allow is the operator's choice.
 */
export function suggestRule(entry: Refused): string {
  if (entry.reference === '') {
    const repository = `${entry.host}/${entry.name}`;
    return `# tags/list of ${repository} refused (no rule names the repository); allow an image with `
      + `"sluice allow add ${repository}:TAG" (or every tag with "sluice allow add ${repository}")`;
  }
  return `sluice allow add ${deniedReference(entry)}`;
}
