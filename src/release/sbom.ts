// What the bundle holds, told two ways: a CycloneDX SBOM (npm sbom's components, kept only for the packages in the
// bundle, plus the Node.js runtime; stamped with the commit date so it is reproducible) and THIRD-PARTY-NOTICES,
// every bundled package's licence and notice files.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BundledPackage, Runtime } from './bundle.js';
import type { PackageJson } from './source.js';

interface Component {
  'bom-ref'?: string;
  type?: string;
  name: string;
  version: string;
  [key: string]: unknown;
}

interface CycloneDx {
  serialNumber?: string;
  metadata: { timestamp?: string; component?: Record<string, unknown>; [key: string]: unknown };
  components: Component[];
  dependencies?: Array<{ ref: string; dependsOn?: string[] }>;
  [key: string]: unknown;
}

/**
 * `npm sbom` over the whole tree, narrowed to the bundled packages: with `--omit dev` npm 11 also drops production
 * packages that a dev package shares (yaml, semver, pg-types…), so the bundle's own list decides instead.
 */
export async function makeSbom(root: string, pkg: PackageJson, packages: readonly BundledPackage[], runtime: Runtime, date: Date): Promise<string> {
  const { stdout } = await promisify(execFile)('npm', ['sbom', '--sbom-format', 'cyclonedx', '--sbom-type', 'application'], { cwd: root, maxBuffer: 256 << 20 });
  const bom = JSON.parse(stdout) as CycloneDx;
  const wanted = new Set(packages.map((p) => `${p.name}@${p.version}`));
  const seen = new Set<string>();
  // npm names a linked package (sluice's own, file: in package.json) after its folder; its bom-ref has the real name.
  const keyOf = (c: Component): string => (c['bom-ref'] !== undefined && wanted.has(c['bom-ref']) ? c['bom-ref'] : `${c.name}@${c.version}`);
  const components = bom.components.filter((c) => {
    const key = keyOf(c);
    if (!wanted.has(key) || seen.has(key)) return false;
    seen.add(key);
    return true;
  }).map((c): Component => ({ ...c, name: keyOf(c).slice(0, keyOf(c).lastIndexOf('@')) }));
  const missing = [...wanted].filter((k) => !seen.has(k));
  if (missing.length > 0) throw new Error(`npm sbom does not list ${missing.join(', ')}`);
  const runtimeRef = `${runtime.packageName}@${runtime.version}`;
  components.push({
    'bom-ref': runtimeRef,
    type: 'platform',
    name: 'node',
    version: runtime.version,
    description: `Node.js runtime (bin/node of the npm package ${runtime.packageName})`,
    purl: `pkg:npm/${runtime.packageName}@${runtime.version}`,
    licenses: [{ license: { id: 'MIT' } }],
  });
  components.sort((a, b) => ((a['bom-ref'] ?? '') < (b['bom-ref'] ?? '') ? -1 : 1));
  const refs = new Set(components.map((c) => c['bom-ref']));
  const rootRef = `${pkg.name}@${pkg.version}`;
  refs.add(rootRef);
  bom.dependencies = (bom.dependencies ?? [])
    .filter((d) => refs.has(d.ref))
    .map((d) => ({ ref: d.ref, dependsOn: (d.dependsOn ?? []).filter((r) => refs.has(r)).sort() }))
    .sort((a, b) => (a.ref < b.ref ? -1 : 1));
  bom.components = components;
  // npm names the root after the checkout's folder; the release is the package.
  bom.metadata = { ...bom.metadata, timestamp: date.toISOString(), component: { ...bom.metadata.component, name: pkg.name, 'bom-ref': rootRef } };
  delete bom.serialNumber;
  const hex = createHash('sha256').update(JSON.stringify(bom)).digest('hex');
  const serial = `urn:uuid:${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
  return `${JSON.stringify({ ...bom, serialNumber: serial }, null, 2)}\n`;
}

const NOTICE_FILE = /^(licen[cs]e|notice|copying|copyright)(\b|[._-])/i;

/** The licence and notice files of every bundled package and of the runtime, one section each. */
export async function thirdPartyNotices(packages: ReadonlyArray<BundledPackage & { dir: string }>, runtime: Runtime): Promise<string> {
  const sections: string[] = [];
  const section = async (title: string, license: string, dir: string): Promise<void> => {
    const files = (await readdir(dir)).filter((f) => NOTICE_FILE.test(f)).sort();
    const bodies = await Promise.all(files.map(async (f) => `--- ${f}\n${(await readFile(join(dir, f), 'utf8')).trimEnd()}\n`));
    sections.push(`=== ${title} (${license})\n${bodies.length > 0 ? bodies.join('\n') : '(the package ships no licence file; its declared licence is above)\n'}`);
  };
  await section(`node ${runtime.version} (bin/node of ${runtime.packageName})`, 'MIT and the licences in its LICENSE', runtime.dir);
  for (const p of packages) await section(`${p.name} ${p.version} (${p.path})`, p.license, p.dir);
  return `Third-party software in this release of sluice, with its licences.\n\n${sections.join('\n')}`;
}
