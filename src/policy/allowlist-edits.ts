// The edits of the rule list as steps (the clock passed in): each takes the entries read under the lock and says what the next
// list is (undefined: unchanged, nothing to write) and what the caller is told. Allowlist.edit applies them.
import type { Entry, RuleRecord } from './allowlist-file.js';
import type { RuleSpec } from './rules.js';

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

/** One step of Allowlist.edit: `missing` is true when there was no document yet. */
export type Edit<R> = (entries: Entry[], missing: boolean) => { next: Entry[] | undefined; result: R };

/** Merges config rules (addedBy "config"); a missing document is written even when nothing is added. */
export function seedRules(specs: RuleSpec[], now: () => string): Edit<undefined> {
  return (entries, missing) => {
    const at = now();
    const keys = new Set(entries.map((e) => e.spec.key));
    const added: Entry[] = [];
    for (const spec of specs) {
      if (keys.has(spec.key)) continue;
      keys.add(spec.key);
      added.push({ spec, record: { rule: spec.text, addedBy: 'config', addedAt: at } });
    }
    return { next: added.length > 0 || missing ? [...entries, ...added] : undefined, result: undefined };
  };
}

/** Appends the rules not yet present; a present rule keeps its first metadata. */
export function addRules(specs: RuleSpec[], meta: { note?: string; by: string }, now: () => string): Edit<AddResult> {
  return (entries) => {
    const keys = new Set(entries.map((e) => e.spec.key));
    const added: Entry[] = [];
    const existing: string[] = [];
    const at = now();
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
  };
}

/** Removes by canonical identity (`name:tag@digest` and `name@digest` are the same rule). */
export function removeRules(specs: RuleSpec[]): Edit<RemoveResult> {
  return (entries) => {
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
  };
}
