// The live allowlist: rule records persisted through lowdb (the only policy module importing it), a
// compiled matcher swapped on every change, and edits that re-read the file under a cross-process lock.

import { mkdir, open as openFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { JSONFile } from 'lowdb/node';
import { withFileLock, type FileLockOptions } from './filelock.js';
import { Matcher } from './matcher.js';
import { parseRule, RuleError, type RuleSpec } from './rules.js';

export { RuleError, parseRule, parseImageList, canonicalHost, type RuleSpec, type ImageListError } from './rules.js';
export { isDigestReachable, signatureSubject, Matcher, type ReachabilityLimits } from './matcher.js';
export { withFileLock, LockTimeoutError, type FileLockOptions } from './filelock.js';

export interface RuleRecord {
  /** Canonical rule text (RuleSpec.text). */
  rule: string;
  note?: string;
  addedBy: string;
  /** ISO 8601. */
  addedAt: string;
}

interface StoreData {
  version: 1;
  rules: RuleRecord[];
}

interface Entry {
  spec: RuleSpec;
  record: RuleRecord;
}

/** Every rule of a batch that does not parse; nothing of the batch was applied. */
export class InvalidRulesError extends Error {
  constructor(readonly errors: RuleError[]) {
    super(errors.map((e) => e.message).join('; '));
    this.name = 'InvalidRulesError';
  }
}

/** The store file cannot be used as it is; sluice must not start with an empty or partial list. */
export class AllowlistFileError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`allowlist file ${file} is not usable: ${problem} (fix or move it; sluice will not run with a partial list)`);
    this.name = 'AllowlistFileError';
  }
}

export interface AllowlistOptions extends FileLockOptions {
  /** Clock for addedAt (tests). */
  now?: () => Date;
}

export interface AddResult {
  added: RuleRecord[];
  /** Canonical texts of rules that were already present (their first metadata is kept). */
  existing: string[];
}

export interface RemoveResult {
  /** Canonical texts of the records removed. */
  removed: string[];
  /** Canonical texts of requested rules that were not present. */
  missing: string[];
}

function parseAll(rules: string[]): RuleSpec[] {
  const errors: RuleError[] = [];
  const specs: RuleSpec[] = [];
  for (const text of rules) {
    try {
      specs.push(parseRule(text));
    } catch (err) {
      if (!(err instanceof RuleError)) throw err;
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new InvalidRulesError(errors);
  return specs;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks the whole file; reports every problem at once. Duplicate keys keep the first record. */
function validate(raw: unknown): { entries: Entry[]; problems: string[] } {
  if (!isObject(raw)) return { entries: [], problems: ['expected a JSON object {"version":1,"rules":[...]}'] };
  const problems: string[] = [];
  if (raw.version !== undefined && raw.version !== 1) problems.push(`unsupported version ${JSON.stringify(raw.version)}`);
  if (!Array.isArray(raw.rules)) return { entries: [], problems: [...problems, '"rules" must be an array'] };
  const entries: Entry[] = [];
  const keys = new Set<string>();
  raw.rules.forEach((item: unknown, i) => {
    const where = `rules[${i}]`;
    if (!isObject(item)) return problems.push(`${where}: expected an object`);
    const { rule, note, addedBy, addedAt } = item;
    if (typeof rule !== 'string') return problems.push(`${where}.rule: expected a string`);
    if (typeof addedBy !== 'string') return problems.push(`${where}.addedBy: expected a string`);
    if (typeof addedAt !== 'string' || Number.isNaN(Date.parse(addedAt))) {
      return problems.push(`${where}.addedAt: expected an ISO date`);
    }
    if (note !== undefined && typeof note !== 'string') return problems.push(`${where}.note: expected a string`);
    let spec: RuleSpec;
    try {
      spec = parseRule(rule);
    } catch (err) {
      if (!(err instanceof RuleError)) throw err;
      return problems.push(`${where}.rule ${JSON.stringify(rule)}: ${err.reason}`);
    }
    if (keys.has(spec.key)) return;
    keys.add(spec.key);
    const record: RuleRecord = { rule: spec.text, addedBy, addedAt, ...(note === undefined ? {} : { note }) };
    entries.push({ spec, record });
  });
  return { entries, problems };
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await openFile(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export class Allowlist {
  private readonly db: Low<StoreData>;
  private readonly lockPath: string;
  private entries: Entry[] = [];
  private current: Matcher<RuleRecord> = new Matcher([]);
  private changes = 0;
  private readonly listeners = new Set<(version: number) => void>();

  private constructor(
    readonly file: string,
    private readonly opts: AllowlistOptions,
  ) {
    this.db = new Low<StoreData>(new JSONFile<StoreData>(file), { version: 1, rules: [] });
    this.lockPath = `${file}.lock`;
  }

  /**
   * Opens (or creates) the store file and merges `seed` (config rules, addedBy "config") into it.
   * Throws InvalidRulesError for a bad seed, AllowlistFileError for a corrupt file.
   */
  static async open(file: string, seed: string[] = [], opts: AllowlistOptions = {}): Promise<Allowlist> {
    const seedSpecs = parseAll(seed);
    await mkdir(dirname(file), { recursive: true });
    const list = new Allowlist(file, opts);
    await list.edit((entries, missing) => {
      const at = list.now();
      const keys = new Set(entries.map((e) => e.spec.key));
      const added: Entry[] = [];
      for (const spec of seedSpecs) {
        if (keys.has(spec.key)) continue;
        keys.add(spec.key);
        added.push({ spec, record: { rule: spec.text, addedBy: 'config', addedAt: at } });
      }
      return { next: added.length > 0 || missing ? [...entries, ...added] : undefined, result: undefined };
    });
    return list;
  }

  /** Bumped on every change of the rule set, so callers can cache derived sets. */
  get version(): number {
    return this.changes;
  }

  /** The compiled rules as of now; one request should use one snapshot. */
  get matcher(): Matcher<RuleRecord> {
    return this.current;
  }

  list(): RuleRecord[] {
    return this.entries.map((e) => ({ ...e.record }));
  }

  /** Adds every rule or none: any invalid rule throws InvalidRulesError listing all of them. */
  async add(rules: string[], meta: { note?: string; by: string }): Promise<AddResult> {
    const specs = parseAll(rules);
    return this.edit((entries) => {
      const keys = new Set(entries.map((e) => e.spec.key));
      const added: Entry[] = [];
      const existing: string[] = [];
      const at = this.now();
      for (const spec of specs) {
        if (keys.has(spec.key)) {
          existing.push(spec.text);
          continue;
        }
        keys.add(spec.key);
        const record: RuleRecord = { rule: spec.text, addedBy: meta.by, addedAt: at };
        if (meta.note !== undefined && meta.note !== '') record.note = meta.note;
        added.push({ spec, record });
      }
      const result = { added: added.map((e) => ({ ...e.record })), existing };
      return { next: added.length > 0 ? [...entries, ...added] : undefined, result };
    });
  }

  /** Removes by canonical identity (`name:tag@digest` and `name@digest` are the same rule). */
  async remove(rules: string[]): Promise<RemoveResult> {
    const specs = parseAll(rules);
    return this.edit((entries) => {
      const wanted = new Map(specs.map((s) => [s.key, s.text]));
      const removed: string[] = [];
      const next = entries.filter((e) => {
        if (!wanted.has(e.spec.key)) return true;
        removed.push(e.record.rule);
        wanted.delete(e.spec.key);
        return false;
      });
      const result = { removed, missing: [...wanted.values()] };
      return { next: removed.length > 0 ? next : undefined, result };
    });
  }

  /** Re-reads the file (edits made by another process); a broken file throws and keeps the current list. */
  async reload(): Promise<void> {
    this.adopt(await this.readStore());
  }

  /** Called after every change with the new version; returns an unsubscribe function. */
  onChange(listener: (version: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  matchTag(host: string, name: string, tag: string): RuleRecord | undefined {
    return this.current.matchTag(host, name, tag);
  }
  allowsAnyTag(host: string, name: string): boolean {
    return this.current.allowsAnyTag(host, name);
  }
  tagRulesFor(host: string, name: string): (tag: string) => boolean {
    return this.current.tagRulesFor(host, name);
  }
  pinnedDigests(host: string, name: string): string[] {
    return this.current.pinnedDigests(host, name);
  }
  isDigestPinned(host: string, name: string, digest: string): boolean {
    return this.current.isDigestPinned(host, name, digest);
  }
  matchesRepository(host: string, name: string): boolean {
    return this.current.matchesRepository(host, name);
  }

  private now(): string {
    return (this.opts.now?.() ?? new Date()).toISOString();
  }

  /**
   * The one way to change the file: under the lock, re-read it (another process may have written),
   * let `change` derive the next list, write it atomically and durably, then swap the matcher.
   */
  private async edit<R>(
    change: (entries: Entry[], missing: boolean) => { next: Entry[] | undefined; result: R },
  ): Promise<R> {
    return withFileLock(
      this.lockPath,
      async () => {
        const missing = !(await this.exists());
        const entries = await this.readStore();
        const { next, result } = change(entries, missing);
        if (next !== undefined) await this.write(next);
        this.adopt(next ?? entries);
        return result;
      },
      this.opts,
    );
  }

  private async exists(): Promise<boolean> {
    return stat(this.file).then(
      () => true,
      () => false,
    );
  }

  private async readStore(): Promise<Entry[]> {
    let raw: unknown;
    try {
      raw = await this.db.adapter.read();
    } catch (err) {
      throw new AllowlistFileError(this.file, err instanceof Error ? err.message : String(err));
    }
    // lowdb answers null both for a missing file and for a file containing `null`.
    if (raw === null) {
      if (await this.exists()) throw new AllowlistFileError(this.file, 'contains null, expected {"version":1,"rules":[...]}');
      return [];
    }
    const { entries, problems } = validate(raw);
    if (problems.length > 0) throw new AllowlistFileError(this.file, problems.join('; '));
    return entries;
  }

  /** lowdb's JSONFile writes through steno: temp file + rename (atomic); we add fsync for durability. */
  private async write(entries: Entry[]): Promise<void> {
    this.db.data = { version: 1, rules: entries.map((e) => e.record) };
    await this.db.write();
    await fsyncPath(this.file);
    await fsyncPath(dirname(this.file));
  }

  private adopt(entries: Entry[]): void {
    const same =
      entries.length === this.entries.length &&
      entries.every((e, i) => JSON.stringify(e.record) === JSON.stringify(this.entries[i]?.record));
    if (same && this.changes > 0) return;
    this.entries = entries;
    this.current = new Matcher(entries);
    this.changes += 1;
    for (const listener of this.listeners) listener(this.changes);
  }
}
