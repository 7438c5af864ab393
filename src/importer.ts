// `sluice import`: reads an OCI image layout (a directory or a .tar of one), verifies every blob of every
// image against its descriptor (all platforms of an index), and only then commits the image to the store.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, normalize, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import { childDescriptors, isIndexType, manifestMediaType, parseManifest, MANIFEST_MEDIA_TYPES } from './manifest.js';
import { parseRule } from './rules.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from './store.js';

const REF_NAME = 'org.opencontainers.image.ref.name';
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const MAX_DEPTH = 4;

export interface ImageRef {
  host: string;
  name: string;
  tag: string;
}

export interface ImportResult {
  imported: Array<{ ref: string; digest: string; blobs: number; bytes: number }>;
  failed: Array<{ ref: string; reason: string }>;
}

export interface ImportOptions {
  as?: string;
  progress?: (line: string) => void;
}

export class ImportError extends Error {}

export async function importPath(store: Store, path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ImportError(`${path}: no such file or directory`);
  if (info.isDirectory()) return importLayout(store, path, opts);
  const dir = await mkdtemp(join(store.tmpDir, 'import-'));
  try {
    await extractTar(path, dir);
    return await importLayout(store, dir, opts);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function parseImageRef(text: string): ImageRef {
  const rule = parseRule(text);
  if (rule.nameGlob || (rule.tag ?? '').includes('*')) throw new ImportError(`${text}: an image reference cannot contain globs`);
  if (!rule.tag) throw new ImportError(`${text}: the reference needs a tag (e.g. ${text}:v1)`);
  return { host: rule.host, name: rule.name, tag: rule.tag };
}

async function importLayout(store: Store, dir: string, opts: ImportOptions): Promise<ImportResult> {
  const index = await readIndex(dir);
  const entries = index.manifests;
  if (opts.as !== undefined && entries.length !== 1) {
    throw new ImportError(`--as names one image, but ${dir} holds ${entries.length}`);
  }
  const result: ImportResult = { imported: [], failed: [] };
  for (const root of entries) {
    const refText = opts.as ?? root.annotations?.[REF_NAME] ?? '';
    try {
      if (!refText.includes('/') && !refText.includes(':') ) {
        throw new ImportError(`index.json entry ${root.digest} has no full reference in ${REF_NAME} ("${refText}"); use --as REF`);
      }
      const ref = parseImageRef(refText);
      const image = await collect(dir, root);
      let done = 0;
      for (const d of image.blobs) {
        await verifyBlob(dir, d);
        opts.progress?.(`verifying ${refText}: ${++done}/${image.blobs.length} blobs`);
      }
      await commitImage(store, dir, ref, root, image);
      const bytes = image.blobs.reduce((n, d) => n + d.size, 0);
      result.imported.push({ ref: `${ref.host}/${ref.name}:${ref.tag}`, digest: root.digest, blobs: image.blobs.length, bytes });
      opts.progress?.(`imported ${refText} ${root.digest}`);
    } catch (e) {
      result.failed.push({ ref: refText || root.digest, reason: (e as Error).message });
    }
  }
  return result;
}

interface Collected {
  /** Manifests in commit order: children before parents. */
  manifests: Array<{ d: Descriptor; body: Buffer; mediaType: string }>;
  /** Every blob of the image, manifests included. */
  blobs: Descriptor[];
}

async function collect(dir: string, root: Descriptor): Promise<Collected> {
  const out: Collected = { manifests: [], blobs: [] };
  const seen = new Set<string>();
  const visit = async (d: Descriptor, depth: number): Promise<void> => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    checkDescriptor(d);
    out.blobs.push(d);
    if (!MANIFEST_MEDIA_TYPES.includes(d.mediaType)) return;
    if (depth > MAX_DEPTH) throw new ImportError(`manifest ${d.digest} nests deeper than ${MAX_DEPTH} levels`);
    if (d.size > MAX_MANIFEST_BYTES) throw new ImportError(`manifest ${d.digest} is larger than 4 MiB`);
    const body = await readBlobFile(dir, d);
    const doc = parseManifest(body);
    const mediaType = doc && manifestMediaType(doc, d.mediaType);
    if (!doc || !mediaType) throw new ImportError(`blob ${d.digest} is not a valid manifest`);
    if (mediaType !== d.mediaType) throw new ImportError(`manifest ${d.digest} says ${mediaType} but its descriptor says ${d.mediaType}`);
    for (const child of childDescriptors(doc)) await visit(child, depth + 1);
    if (!isIndexType(mediaType) && doc.config === undefined) throw new ImportError(`manifest ${d.digest} has no config`);
    out.manifests.push({ d, body, mediaType });
  };
  await visit(root, 0);
  return out;
}

async function commitImage(store: Store, dir: string, ref: ImageRef, root: Descriptor, image: Collected): Promise<void> {
  const manifestDigests = new Set(image.manifests.map((m) => m.d.digest));
  for (const d of image.blobs) {
    if (manifestDigests.has(d.digest)) continue;
    if (!(await store.stat(d.digest))) {
      await store.ingest(createReadStream(blobFile(dir, d.digest), { highWaterMark: 1024 * 1024 }), { digest: d.digest, sizeBytes: d.size });
    }
    // The layout had these bytes for this image: they may be served through its repository (even if stored before).
    await store.linkBlob(ref.host, ref.name, d.digest);
  }
  for (const m of image.manifests) {
    const stored = await store.putManifest(m.body, m.mediaType, m.d.digest);
    await store.linkManifest(ref.host, ref.name, stored);
  }
  await store.setTag(ref.host, ref.name, ref.tag, root.digest);
}

async function verifyBlob(dir: string, d: Descriptor): Promise<void> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(blobFile(dir, d.digest), { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
    }
  } catch (e) {
    throw new ImportError(`blob ${d.digest} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (size !== d.size) throw new ImportError(`blob ${d.digest} is ${size} bytes, its descriptor says ${d.size}`);
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== d.digest) throw new ImportError(`blob ${d.digest} is corrupt: its content hashes to ${got}`);
}

async function readBlobFile(dir: string, d: Descriptor): Promise<Buffer> {
  try {
    return await readFile(blobFile(dir, d.digest));
  } catch (e) {
    throw new ImportError(`blob ${d.digest} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function blobFile(dir: string, digest: string): string {
  return join(dir, 'blobs', 'sha256', digest.slice(7));
}

function checkDescriptor(d: Descriptor): void {
  if (typeof d.digest !== 'string' || !SHA256_RE.test(d.digest)) throw new ImportError(`descriptor has an invalid or non-sha256 digest: ${String(d.digest).slice(0, 80)}`);
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new ImportError(`descriptor ${d.digest} has an invalid size`);
  if (typeof d.mediaType !== 'string') throw new ImportError(`descriptor ${d.digest} has no mediaType`);
}

async function readIndex(dir: string): Promise<{ manifests: Descriptor[] }> {
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  } catch (e) {
    throw new ImportError(`${dir} is not an OCI image layout: index.json: ${(e as Error).message}`);
  }
  const manifests = (doc as { manifests?: unknown }).manifests;
  if (!Array.isArray(manifests)) throw new ImportError(`${dir}/index.json has no manifests list`);
  return { manifests: manifests as Descriptor[] };
}

/** Extracts only the files an image layout has; any other entry or a path escaping the folder is refused. */
async function extractTar(tarPath: string, dest: string): Promise<void> {
  const ex = extract();
  const done = (async () => {
    for await (const entry of ex) {
      const name = normalize(entry.header.name.replace(/^\.\//, ''));
      const allowed = name === 'index.json' || name === 'oci-layout' || /^blobs\/sha256\/[a-f0-9]{64}$/.test(name);
      if (entry.header.type === 'file' && allowed && !name.startsWith('..') && !name.includes(`..${sep}`)) {
        const out = join(dest, name);
        await mkdir(dirname(out), { recursive: true });
        await pipeline(entry, createWriteStream(out, { flags: 'wx' }));
      } else {
        entry.resume();
        await new Promise<void>((resolve) => entry.on('end', resolve));
      }
    }
  })();
  await Promise.all([pipeline(createReadStream(tarPath), ex), done]);
}
