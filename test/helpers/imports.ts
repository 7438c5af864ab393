// Reading a source tree's imports for the structure tests (layers, store backends, cycles): the modules under a
// folder, and the relative specifiers each one imports.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Every .ts module under `dir`, recursively. */
export function modules(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) return modules(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative specifiers of static imports (types too), `export … from` and dynamic `import('…')`. */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re = /(?:^|[\s;])(?:import|export)\s[^'"`]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith('.')) out.push(spec);
  }
  return out;
}
