// The in-memory caches of src/ allocate as they fill: lru-cache's `max: N` allocates all N slots when the cache is
// made (a 200,000-slot one costs ~20 ms at start), so a large count bound is written `maxSize: N` with every entry
// counting 1. Each `new LRUCache` under src/ is read; a `max` over SMALL_MAX names its file and line.
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { modules } from '../helpers/imports.js';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');
/** Preallocating this many slots costs a fraction of a millisecond. */
const SMALL_MAX = 2_000;

/** `file:line max: N` for each `new LRUCache<…>({ … max: N … })` whose N is over SMALL_MAX. */
export function preallocatingCaches(file: string, source: string): string[] {
  const bad: string[] = [];
  for (const m of source.matchAll(/new LRUCache\b[^(]*\(\{/g)) {
    const options = optionsText(source, (m.index ?? 0) + m[0].length);
    const max = /(?:^|[\s,{])max:\s*([\d_]+)/.exec(options);
    const n = max ? Number(max[1]?.replaceAll('_', '')) : 0;
    if (n > SMALL_MAX) bad.push(`${file}:${source.slice(0, m.index).split('\n').length} max: ${max?.[1]}`);
  }
  return bad;
}

/** The options object's text from just after its `{` to its matching `}`. */
function optionsText(source: string, from: number): string {
  let depth = 1;
  for (let i = from; i < source.length; i++) {
    if (source[i] === '{') depth++;
    else if (source[i] === '}' && --depth === 0) return source.slice(from, i);
  }
  return source.slice(from);
}

describe('count-bounded LRU caches allocate as they fill', () => {
  it('no cache under src/ is made with a large `max` (use maxSize with sizeCalculation: () => 1)', () => {
    const bad = modules(SRC).flatMap((f) => preallocatingCaches(relative(SRC, f), readFileSync(f, 'utf8')));
    expect(bad).toEqual([]);
  });

  it('finds a large max, nested options and all, and leaves small ones and maxSize alone', () => {
    const source = [
      "const a = new LRUCache<string, true>({ maxSize: 200_000, sizeCalculation: () => 1 });",
      "const b = new LRUCache<string, R>({ max: 2_000 });",
      "const c = new LRUCache<string, R>({",
      "  ttl: 5, fetchMethod: async () => { return { x: 1 }; },",
      "  max: 100_000,",
      "});",
      "const d = new LRUCache({ max: 10000, maxSize: 5 });",
    ].join('\n');
    expect(preallocatingCaches('x.ts', source)).toEqual(['x.ts:3 max: 100_000', 'x.ts:7 max: 10000']);
  });
});
