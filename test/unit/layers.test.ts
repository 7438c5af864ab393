// The one-way import rule of src/ (README, "Architecture"): a folder may import only from folders below it, http/
// not from store/, and inside store/ the backends stay apart (only the factory picks one). Parses every import; names a bad edge.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { importsOf, modules } from '../helpers/imports.js';

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

/** store/'s backend folders: none imports another; store/local (what fs and S3 share) imports none of them. */
const STORE_BACKENDS = ['fs', 's3', 'pg', 'memory', 'cache'];

/** The folder of a module inside store/ ('' for store/'s own modules), or undefined outside store/. */
function storePartOf(file: string): string | undefined {
  const parts = relative(SRC, file).split(sep);
  if (parts[0] !== 'store') return undefined;
  return parts.length === 2 ? '' : parts[1];
}

/**
 * Edges that cross between store backends: fs, s3, pg and memory import none of each other, store/local none of
 * them, and of store/'s own modules only the factory (open.ts) imports a backend; nothing outside store/ does.
 */
export function storeBackendEdges(files: Array<{ file: string; source: string }>): string[] {
  const bad: string[] = [];
  for (const { file, source } of files) {
    const from = storePartOf(file);
    for (const spec of importsOf(source)) {
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
      const to = storePartOf(target);
      if (to === undefined || to === from || !(STORE_BACKENDS.includes(to) || to === 'local')) continue;
      const edge = `${relative(SRC, file)} → ${relative(SRC, target)}`;
      if (from === undefined) bad.push(`${edge} (only store/ sees its backends)`);
      else if (to === 'local') continue;
      else if (from === '' && relative(SRC, file) !== join('store', 'open.ts')) bad.push(`${edge} (only store/open.ts picks a backend)`);
      else if (from !== '') bad.push(`${edge} (store/${from} may not import store/${to})`);
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

describe('store backends stay apart', () => {
  const files = modules(SRC).map((file) => ({ file, source: readFileSync(file, 'utf8') }));

  it('has no edge between backends, and only the factory picks one', () => {
    expect(storeBackendEdges(files)).toEqual([]);
  });

  it('catches store/s3 importing store/fs, and a module outside the factory picking a backend', () => {
    const s3 = join(SRC, 'store', 's3', 'blobs.ts');
    expect(storeBackendEdges([{ file: s3, source: "import { LocalSpool } from '../fs/spool.js';\n" }])).toEqual([
      'store/s3/blobs.ts → store/fs/spool.ts (store/s3 may not import store/fs)',
    ]);
    expect(storeBackendEdges([{ file: s3, source: "import { LocalSpool } from '../local/spool.js';\n" }])).toEqual([]);
    expect(storeBackendEdges([{ file: join(SRC, 'store', 'local', 'spool.ts'), source: "import type { X } from '../pg/state.js';\n" }])).toHaveLength(1);
    expect(storeBackendEdges([{ file: join(SRC, 'store', 'store.ts'), source: "const m = await import('./pg/metadata.js');\n" }])).toEqual([
      'store/store.ts → store/pg/metadata.ts (only store/open.ts picks a backend)',
    ]);
    expect(storeBackendEdges([{ file: join(SRC, 'cli', 'commands.ts'), source: "import { LockTimeoutError } from '../store/fs/filelock.js';\n" }])).toEqual([
      'cli/commands.ts → store/fs/filelock.ts (only store/ sees its backends)',
    ]);
  });
});
