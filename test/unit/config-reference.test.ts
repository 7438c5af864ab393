// The configuration reference (config/README.md) against the validator's own key tree: a key the validator
// accepts without a row, or a row naming no key, fails; and the validator refuses any key the tree does not name.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/config/config.js';
import { ANY_HOST, CONFIG_KEYS, keyPaths, LIST_ITEM, type KeyTree } from '../../src/config/keys.js';

const REFERENCE = 'config/README.md';

/** The first cell of every row of the "Every key" section: `key.path`. */
function documentedKeys(markdown: string): string[] {
  const section = markdown.split(/^## /m).find((s) => s.startsWith('Every key'));
  if (section === undefined) throw new Error(`${REFERENCE} has no "## Every key" section`);
  return [...section.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1] ?? '');
}

function problemsOf(doc: unknown): string[] {
  try {
    validateConfig(doc, '/etc/sluice/sluice.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

/** Every mapping of named keys in the tree, with its path: where the validator must refuse an unknown key. */
function mappings(tree: KeyTree, at: string[] = []): { at: string[]; tree: KeyTree }[] {
  const named = !(ANY_HOST in tree) && !(LIST_ITEM in tree);
  const below = Object.entries(tree).flatMap(([k, sub]) => (sub === null ? [] : mappings(sub, [...at, k])));
  return named ? [{ at, tree }, ...below] : below;
}

/** A document with `leaf` placed at `at` (a host for `<host>`, a one-item list for `[]`). */
function placed(at: string[], leaf: Record<string, unknown>): unknown {
  const [head, ...rest] = at;
  if (head === undefined) return leaf;
  if (head === LIST_ITEM) return [placed(rest, leaf)];
  return { [head === ANY_HOST ? 'reg.example' : head]: placed(rest, leaf) };
}

describe('config/README.md documents every key the validator accepts', () => {
  const rows = documentedKeys(readFileSync(REFERENCE, 'utf8'));

  it('has one row for every key of the validator, and no row for a key it does not accept', () => {
    const keys = keyPaths();
    expect(rows.filter((r) => !keys.includes(r)), 'rows naming no key the validator accepts').toEqual([]);
    expect(keys.filter((k) => !rows.includes(k)), 'keys the validator accepts without a row').toEqual([]);
  });

  it('has each row once', () => {
    expect(rows.filter((r, i) => rows.indexOf(r) !== i)).toEqual([]);
  });
});

describe('the validator refuses every key its key tree does not name', () => {
  for (const { at, tree } of mappings(CONFIG_KEYS)) {
    const where = at.length === 0 ? '(root)' : at.join('.').replace(`.${LIST_ITEM}`, LIST_ITEM);
    it(`refuses an unknown key in ${where}, naming its path (and knows ${Object.keys(tree).join(', ')})`, () => {
      const path = at.map((k) => (k === ANY_HOST ? 'reg.example' : k)).join('.').replace(`.${LIST_ITEM}`, '[0]');
      const problems = problemsOf(placed(at, { notAKey: 1 }));
      expect(problems.some((p) => p.startsWith(`${path === '' ? '' : `${path}.`}notAKey: unknown key`)), problems.join('\n')).toBe(true);
      for (const known of Object.keys(tree)) {
        expect(problemsOf(placed(at, { [known]: 1 })).some((p) => p.includes(`${known}: unknown key`))).toBe(false);
      }
    });
  }
});
