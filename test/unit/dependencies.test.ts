// Every package in package.json is used: a dependency is imported under src/, a devDependency is imported under
// test/, bench/ or the release tool (src/release/, build time only), runs as a script's command, or types a package
// that is used. An air-gap tool carries no dead code.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

interface PackageJson {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  scripts: Record<string, string>;
  bin?: string | Record<string, string>;
}

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as PackageJson;

function sources(dir: string, skip = (_path: string): boolean => false): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !skip(join(e.parentPath, e.name)))
    .map((e) => readFileSync(join(e.parentPath, e.name), 'utf8'));
}

/** The release tool runs at build time and is left out of the release (src/release/bundle.ts skips dist/src/release). */
const isReleaseTool = (path: string): boolean => path.startsWith(join('src', 'release') + '/');

/** The package names a set of files imports (`from 'x'`, `from 'x/y'`, `import('x')`, `@scope/x`). */
function importedPackages(files: string[]): Set<string> {
  const out = new Set<string>();
  for (const text of files) {
    for (const m of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)'([^'.][^']*)'/g)) {
      const spec = m[1] ?? '';
      const parts = spec.split('/');
      out.add(spec.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? ''));
    }
  }
  return out;
}

/** The commands a package puts on PATH (its package.json `bin`). */
function binsOf(name: string): string[] {
  const file = join('node_modules', name, 'package.json');
  if (!existsSync(file)) return [];
  const own = JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
  if (own.bin === undefined) return [];
  return typeof own.bin === 'string' ? [name.split('/').pop() ?? name] : Object.keys(own.bin);
}

describe('package.json holds no unused package', () => {
  const src = importedPackages(sources('src', isReleaseTool));
  const testAndBench = importedPackages([...sources('test'), ...sources('bench'), ...sources(join('src', 'release'))]);
  const scripts = Object.values(pkg.scripts).join(' && ');
  const runByScript = (name: string): boolean => binsOf(name).some((bin) => new RegExp(`(^|[\\s&;|])${bin}\\s`).test(scripts));

  it('imports every dependency under src/', () => {
    expect(Object.keys(pkg.dependencies).filter((d) => !src.has(d))).toEqual([]);
  });

  it('uses every devDependency: imported by test/ or bench/, run by a script, or the types of a used package', () => {
    const used = (name: string): boolean => {
      if (testAndBench.has(name) || runByScript(name)) return true;
      const typed = /^@types\/(.+)$/.exec(name)?.[1];
      if (typed === undefined) return false;
      return typed === 'node' ? [...src].some((s) => s.startsWith('node:')) : src.has(typed) || testAndBench.has(typed);
    };
    expect(Object.keys(pkg.devDependencies).filter((d) => !used(d))).toEqual([]);
  });

  it('keeps runtime code out of devDependencies: src/ imports no devDependency, but for the release tool (src/release/)', () => {
    expect(Object.keys(pkg.devDependencies).filter((d) => src.has(d) && !d.startsWith('@types/'))).toEqual([]);
  });
});
