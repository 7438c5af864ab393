// No import cycle in src/, bench/ or the test kit (test/kit, test/helpers): a cycle, even of types only, means
// two modules own one thing between them. Parses every relative import (static, `export … from`, dynamic).
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { importsOf, modules } from '../helpers/imports.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TREES = ['src', 'bench', 'test/kit', 'test/helpers'];

/** Every cycle's modules (relative to the repository), one strongly connected component each (Tarjan). */
export function importCycles(files: Array<{ file: string; source: string }>): string[][] {
  const known = new Set(files.map((f) => f.file));
  const edges = new Map(files.map(({ file, source }) => [file, importsOf(source)
    .map((spec) => resolve(dirname(file), spec.replace(/\.js$/, '.ts')))
    .filter((target) => known.has(target))]));
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v) as number);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    for (let w = stack.pop(); w !== undefined; w = stack.pop()) {
      onStack.delete(w);
      scc.push(relative(ROOT, w));
      if (w === v) break;
    }
    if (scc.length > 1 || (edges.get(v) ?? []).includes(v)) cycles.push(scc.sort());
  };
  for (const f of known) if (!index.has(f)) visit(f);
  return cycles;
}

describe('import cycles', () => {
  const files = TREES.flatMap((t) => modules(join(ROOT, t))).map((file) => ({ file, source: readFileSync(file, 'utf8') }));

  it('finds the modules of every tree', () => {
    for (const t of TREES) expect(files.some((f) => relative(ROOT, f.file).startsWith(`${t}/`)), t).toBe(true);
  });

  it('has none in src/, bench/ or the test kit', () => {
    expect(importCycles(files)).toEqual([]);
  });

  it('catches a cycle, of types only too (the check itself can fail)', () => {
    const a = join(ROOT, 'src', 'store', 'a.ts');
    const b = join(ROOT, 'src', 'store', 'b.ts');
    const c = join(ROOT, 'src', 'store', 'c.ts');
    expect(importCycles([
      { file: a, source: "import { B } from './b.js';\n" },
      { file: b, source: "import type { C } from './c.js';\n" },
      { file: c, source: "export type { A } from './a.js';\n" },
    ])).toEqual([['src/store/a.ts', 'src/store/b.ts', 'src/store/c.ts']]);
    expect(importCycles([{ file: a, source: "import { B } from './b.js';\n" }, { file: b, source: '' }])).toEqual([]);
  });
});
