// The live allowlist: rule records kept in a document the store provides (AllowlistStorage: policy declares
// what it needs, store/fs fills it with a locked JSON file), a compiled matcher swapped on every change, edits
// that re-read the document under its cross-process lock, and (in the server) hand edits applied as soon as
// they land, a broken document keeping the last good rules.

import { AllowlistFileError, ConfigRuleError, parseAll, validate, type Entry, type RuleRecord } from './allowlist-file.js';
import { Matcher, type TagRules } from './matcher.js';
import type { AllowlistChange, AllowlistProblem, AllowlistStorage, DocumentWatch, DocumentWatchOptions, WatchLog } from './allowlist-storage.js';
import { addRules, removeRules, seedRules, type AddResult, type Edit, type RemoveResult } from './allowlist-edits.js';

export { RuleError, parseRule, parseImageList, canonicalHost, type RuleSpec, type ImageListError } from './rules.js';
export { signatureSubject, Matcher, type TagRules } from './matcher.js';
export { AllowlistFileError, ConfigRuleError, InvalidRulesError, type RuleRecord } from './allowlist-file.js';
export type { AllowlistChange, AllowlistDocument, AllowlistProblem, AllowlistStorage, DocumentWatch, DocumentWatchOptions, WatchLog } from './allowlist-storage.js';
export type { AddResult, RemoveResult } from './allowlist-edits.js';

export interface AllowlistOptions {
  /** Clock for addedAt (tests). */
  now?: () => Date;
  /** The config file the seed comes from, named when a seeded rule is asked to go. */
  configFile?: string;
}

/** A listed rule; `fromConfig` when the config's `allowlist:` seeds it (it comes back at every start). */
export type ListedRule = RuleRecord & { fromConfig?: true };

export class Allowlist {
  private entries: Entry[] = [];
  private current: Matcher<RuleRecord> = new Matcher([]);
  private changes = 0;
  private readonly listeners = new Set<(version: number) => void>();
  private readonly problemListeners = new Set<(problem: AllowlistProblem | undefined) => void>();
  private trouble: AllowlistProblem | undefined;
  private fileWatch: DocumentWatch | undefined;
  private log: WatchLog = () => undefined;
  /** Set once open() has created or read the file: from then on a missing file is a problem, not a fresh start. */
  private opened = false;
  /** Canonical keys of the config's seed rules. */
  private seedKeys = new Set<string>();

  private constructor(
    private readonly storage: AllowlistStorage,
    private readonly opts: AllowlistOptions,
  ) {}

  /** Where the rules persist (the file path on fs). */
  get file(): string {
    return this.storage.location;
  }

  /**
   * Opens (or creates) the document and merges `seed` (config rules, addedBy "config") into it.
   * Throws InvalidRulesError for a bad seed, AllowlistFileError for a corrupt file.
   */
  static async open(storage: AllowlistStorage, seed: string[] = [], opts: AllowlistOptions = {}): Promise<Allowlist> {
    const seedSpecs = parseAll(seed);
    const list = new Allowlist(storage, opts);
    list.seedKeys = new Set(seedSpecs.map((spec) => spec.key));
    await list.edit({ by: 'config' }, seedRules(seedSpecs, () => list.now()));
    list.opened = true;
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

  /** Like list(), marking the rules the config seeds. */
  listing(): ListedRule[] {
    return this.entries.map((e) => (this.seedKeys.has(e.spec.key) ? { ...e.record, fromConfig: true } : { ...e.record }));
  }

  /** Adds every rule or none: any invalid rule throws InvalidRulesError listing all of them. */
  async add(rules: string[], meta: { note?: string; by: string }): Promise<AddResult> {
    const specs = parseAll(rules);
    return this.edit({ by: meta.by }, addRules(specs, meta, () => this.now()));
  }

  /**
   * Removes by canonical identity (`name:tag@digest` and `name@digest` are the same rule). A batch naming a rule
   * the config seeds throws ConfigRuleError and removes nothing: that rule would be back at the next start.
   */
  async remove(rules: string[], meta: AllowlistChange = {}): Promise<RemoveResult> {
    const specs = parseAll(rules);
    const seeded = specs.filter((spec) => this.seedKeys.has(spec.key)).map((spec) => spec.text);
    if (seeded.length > 0) throw new ConfigRuleError(seeded, this.opts.configFile ?? '');
    return this.edit(meta, removeRules(specs));
  }

  /** Re-reads the file (edits made by another process); a broken file throws and keeps the current list. */
  async reload(): Promise<void> {
    const changed = await this.storage.locked(async () => this.adopt((await this.readStore()).entries));
    if (changed) this.log('info', 'allowlist file changed; rules applied', { file: this.file, rules: this.entries.length, version: this.changes });
  }

  /** Like reload, but a broken file is reported by `problem` (and returned) instead of thrown. */
  async refresh(): Promise<AllowlistProblem | undefined> {
    try {
      await this.reload();
    } catch (err) {
      if (!(err instanceof AllowlistFileError)) throw err;
    }
    return this.trouble;
  }

  /** Set while the file on disk cannot be used; the rules in force are then the last good ones. */
  get problem(): AllowlistProblem | undefined {
    return this.trouble ? { ...this.trouble } : undefined;
  }

  /** Called when `problem` appears, changes or clears; returns an unsubscribe function. */
  onProblem(listener: (problem: AllowlistProblem | undefined) => void): () => void {
    this.problemListeners.add(listener);
    return () => this.problemListeners.delete(listener);
  }

  /**
   * Applies hand edits of the file as they land (the server's mode). Sluice's own writes are seen too, re-read
   * once and found identical: no version bump, and since a re-read never writes, no loop.
   */
  async watch(log: WatchLog, opts?: DocumentWatchOptions): Promise<void> {
    if (this.fileWatch) return;
    this.log = log;
    this.fileWatch = this.storage.watch(() => this.refreshFromWatch(), opts);
    await this.fileWatch.settle();
  }

  close(): void {
    this.fileWatch?.close();
    this.fileWatch = undefined;
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
  namedTags(host: string, name: string): TagRules {
    return this.current.namedTags(host, name);
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

  private async refreshFromWatch(): Promise<void> {
    try {
      await this.refresh();
    } catch (err) {
      if (this.storage.isLockTimeout(err)) this.log('warn', 'allowlist file changed but is locked; retrying', { file: this.file, error: err.message });
      throw err;
    }
  }

  private now(): string {
    return (this.opts.now?.() ?? new Date()).toISOString();
  }

  /**
   * The one way to change the file: under the lock, re-read it (another process may have written),
   * let `change` derive the next list, write it atomically and durably, then swap the matcher.
   */
  private async edit<R>(who: AllowlistChange, change: Edit<R>): Promise<R> {
    return this.storage.locked(async () => {
      const { entries, missing } = await this.readStore();
      const { next, result } = change(entries, missing);
      if (next !== undefined) await this.storage.write({ version: 1, rules: next.map((e) => e.record) }, who);
      this.adopt(next ?? entries);
      return result;
    });
  }

  /** The file's rules; a broken file throws AllowlistFileError and becomes `problem`, a good one clears it. */
  private async readStore(): Promise<{ entries: Entry[]; missing: boolean }> {
    let raw: unknown;
    try {
      raw = await this.storage.read();
    } catch (err) {
      throw this.failed(new AllowlistFileError(this.file, err instanceof Error ? err.message : String(err)));
    }
    if (raw === null) throw this.failed(new AllowlistFileError(this.file, 'contains null, expected {"version":1,"rules":[...]}'));
    if (raw === undefined) {
      if (this.opened) throw this.failed(new AllowlistFileError(this.file, 'is missing (deleted or moved away?); restore it, or restart sluice to recreate it from the config'));
      return { entries: [], missing: true };
    }
    const { entries, problems } = validate(raw);
    if (problems.length > 0) throw this.failed(new AllowlistFileError(this.file, problems.join('; ')));
    this.setProblem(undefined);
    return { entries, missing: false };
  }

  private failed(err: AllowlistFileError): AllowlistFileError {
    if (this.opened) this.setProblem({ file: this.file, message: err.problem, since: this.trouble?.since ?? this.now() });
    return err;
  }

  private setProblem(problem: AllowlistProblem | undefined): void {
    if (problem?.message === this.trouble?.message) return;
    const fields = { file: this.file, rules: this.entries.length };
    if (problem) this.log('warn', 'allowlist file is not usable; the last good rules stay in force', { ...fields, problem: problem.message });
    else this.log('info', 'allowlist file is usable again', fields);
    this.trouble = problem;
    for (const listener of this.problemListeners) listener(this.problem);
  }

  /** Swaps in `entries` unless they are what is in force already; true when the rule set changed. */
  private adopt(entries: Entry[]): boolean {
    const same =
      entries.length === this.entries.length &&
      entries.every((e, i) => JSON.stringify(e.record) === JSON.stringify(this.entries[i]?.record));
    if (same && this.changes > 0) return false;
    this.entries = entries;
    this.current = new Matcher(entries);
    this.changes += 1;
    for (const listener of this.listeners) listener(this.changes);
    return true;
  }
}
