// The one-way import rule of src/ (README, "Architecture"): a folder may import only from folders below it.
// Parses every import of every module under src/ and fails on an edge that points up, names the edge.
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

/**
 * Lowest first. A module may import its own folder and any folder listed before it. `release` (the build tool behind
 * `npm run release`) sits above `main`: it may read the runtime's modules, and no runtime module can import it.
 */
export const LAYERS = [
  'metrics', 'oci', 'window', 'policy', 'config', 'store', 'upstream', 'mirror', 'jobs', 'http', 'admin', 'app', 'cli', 'main', 'release',
] as const;

/** The layer of a module: its first folder under src/, or its own name for the two top-level files. */
function layerOf(file: string): string {
  const parts = relative(SRC, file).split(sep);
  return parts.length === 1 ? parts[0].replace(/\.ts$/, '') : parts[0];
}

function modules(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) return modules(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative specifiers of static imports, `export … from` and dynamic `import('…')`. */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re = /(?:^|[\s;])(?:import|export)\s[^'"`]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith('.')) out.push(spec);
  }
  return out;
}

export function upwardEdges(files: Array<{ file: string; source: string }>): string[] {
  const rank = (layer: string): number => {
    const i = (LAYERS as readonly string[]).indexOf(layer);
    if (i < 0) throw new Error(`src/${layer} is not a known layer: add it to LAYERS in test/unit/layers.test.ts and the README`);
    return i;
  };
  const bad: string[] = [];
  for (const { file, source } of files) {
    const from = layerOf(file);
    for (const spec of importsOf(source)) {
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
      const to = layerOf(target);
      if (to !== from && rank(to) > rank(from)) bad.push(`${relative(SRC, file)} → ${relative(SRC, target)} (${from} may not import ${to})`);
    }
  }
  return bad;
}

/** Edges forbidden although they point down: the registry routes reach content only through the mirror. */
export const FORBIDDEN: ReadonlyArray<{ from: string; to: string; why: string }> = [
  { from: 'http', to: 'store', why: 'routes get content from the mirror, never from the store' },
];

export function forbiddenEdges(files: Array<{ file: string; source: string }>): string[] {
  const bad: string[] = [];
  for (const { file, source } of files) {
    const from = layerOf(file);
    for (const spec of importsOf(source)) {
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
      const rule = FORBIDDEN.find((f) => f.from === from && f.to === layerOf(target));
      if (rule) bad.push(`${relative(SRC, file)} → ${relative(SRC, target)} (${rule.why})`);
    }
  }
  return bad;
}

describe('import direction in src/', () => {
  const files = modules(SRC).map((file) => ({ file, source: readFileSync(file, 'utf8') }));

  it('finds the modules and their imports', () => {
    expect(files.length).toBeGreaterThan(30);
    expect(files.some(({ source }) => importsOf(source).length > 0)).toBe(true);
  });

  it('has no upward edge', () => {
    expect(upwardEdges(files)).toEqual([]);
  });

  it('catches an upward edge (the rule itself can fail)', () => {
    const file = join(SRC, 'oci', 'reference.ts');
    expect(upwardEdges([{ file, source: "import { Store } from '../store/store.js';\n" }])).toEqual([
      'oci/reference.ts → store/store.ts (oci may not import store)',
    ]);
    expect(upwardEdges([{ file: join(SRC, 'http', 'routes.ts'), source: "export type { X } from '../oci/errors.js';" }])).toEqual([]);
    expect(upwardEdges([{ file, source: "const m = await import('../mirror/mirror.js');" }])).toHaveLength(1);
  });

  it('has no forbidden edge: http/ imports nothing from store/', () => {
    expect(forbiddenEdges(files)).toEqual([]);
  });

  it('catches a forbidden edge (the rule itself can fail)', () => {
    const file = join(SRC, 'http', 'routes.ts');
    expect(forbiddenEdges([{ file, source: "import type { Store } from '../store/store.js';\n" }])).toEqual([
      'http/routes.ts → store/store.ts (routes get content from the mirror, never from the store)',
    ]);
    expect(forbiddenEdges([{ file, source: "import type { Mirror } from '../mirror/mirror.js';\n" }])).toEqual([]);
  });
});
