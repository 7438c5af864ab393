// MetadataStore on the fs layout every release wrote (paths: layout.ts): per repository its tags, manifest and
// blob links, referrers and tag history (`_history`, added for gc's `keep`; older stores simply have none).
// Every write is temp file (in the store's own temp folder) → rename, so a reader never sees half of one.
import { readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Descriptor } from '../../oci/manifest.js';
import { HEX_RE, hexOf } from '../digest.js';
import type { LinkableManifest, ManifestType, MetadataStore, RepositoryName, StateDocuments } from '../ports.js';
import { isNotDir, isNotFound, listDir } from '../local/dirs.js';
import { fsStateDocuments } from './state.js';
import { FsLayout, REPOSITORY_PARTS } from './layout.js';
import { referrerDescriptor, subjectOf } from '../referrers.js';

/** Where atomic writes are staged: the store's spool area (local/spool.ts). */
export interface TempArea {
  writeAtomic(dest: string, content: string): Promise<void>;
}

export class FsMetadataStore implements MetadataStore {
  private changes = 0;
  readonly state: StateDocuments;
  private readonly tags = new LRUCache<string, string>({ maxSize: 100_000, sizeCalculation: () => 1 });

  constructor(
    private readonly paths: FsLayout,
    private readonly temp: TempArea,
  ) {
    this.state = fsStateDocuments(paths);
  }

  get generation(): number {
    return this.changes;
  }

  invalidate(): void {
    this.tags.clear();
    this.changes++;
  }

  async setTag(host: string, name: string, tag: string, digest: string): Promise<void> {
    const before = await this.getTag(host, name, tag);
    if (before !== digest) await this.recordMove(host, name, tag, before, digest);
    await this.temp.writeAtomic(this.paths.part(host, name, '_tags', tag), digest);
    this.tags.set(`${host}/${name}:${tag}`, digest);
    this.changes++;
  }

  /** Appends the new digest to the tag's history (with the old one first when the history starts now). */
  private async recordMove(host: string, name: string, tag: string, before: string | undefined, digest: string): Promise<void> {
    const file = this.paths.part(host, name, '_history', tag);
    let lines = (await readText(file) ?? '').split('\n').filter((l) => l.trim() !== '');
    if (lines.length === 0 && before) lines.push(`${before} -`);
    lines.push(`${digest} ${new Date().toISOString()}`);
    if (lines.length > MAX_HISTORY) lines = lines.slice(-MAX_HISTORY);
    await this.temp.writeAtomic(file, `${lines.join('\n')}\n`);
  }

  async tagHistory(host: string, name: string, tag: string): Promise<string[]> {
    const current = await this.getTag(host, name, tag);
    if (!current) return [];
    const text = await readText(this.paths.part(host, name, '_history', tag));
    const out = [current];
    const past = (text ?? '').split('\n').map((l) => l.split(' ')[0] ?? '').filter((d) => d.startsWith('sha256:') && HEX_RE.test(d.slice(7)));
    for (const d of past.reverse()) if (!out.includes(d)) out.push(d);
    return out;
  }

  async deleteTag(host: string, name: string, tag: string): Promise<boolean> {
    const existed = await removeFile(this.paths.part(host, name, '_tags', tag));
    await removeFile(this.paths.part(host, name, '_history', tag));
    this.tags.delete(`${host}/${name}:${tag}`);
    this.changes++;
    return existed;
  }

  async getTag(host: string, name: string, tag: string): Promise<string | undefined> {
    const key = `${host}/${name}:${tag}`;
    const cached = this.tags.get(key);
    if (cached) return cached;
    try {
      const digest = (await readFile(this.paths.part(host, name, '_tags', tag), 'utf8')).trim();
      if (!HEX_RE.test(digest.slice(7))) return undefined;
      this.tags.set(key, digest);
      return digest;
    } catch (e) {
      if (isNotFound(e) || isNotDir(e)) return undefined;
      throw e;
    }
  }

  async listTags(host: string, name: string): Promise<string[]> {
    return (await listDir(this.paths.part(host, name, '_tags'))).filter((t) => !t.startsWith('.')).sort();
  }

  async linkManifest(host: string, name: string, m: LinkableManifest): Promise<void> {
    await this.temp.writeAtomic(this.paths.part(host, name, '_manifests', hexOf(m.digest)), m.mediaType);
    const subject = subjectOf(m.body);
    if (subject) {
      await this.temp.writeAtomic(this.paths.referrers(host, name, subject, m.digest), JSON.stringify(referrerDescriptor(m)));
    }
    this.changes++;
  }

  async linkBlob(host: string, name: string, digest: string): Promise<void> {
    await this.temp.writeAtomic(this.paths.part(host, name, '_blobs', hexOf(digest)), '');
  }

  async linkedBlobs(host: string, name: string): Promise<string[]> {
    return (await listDir(this.paths.part(host, name, '_blobs'))).filter((f) => HEX_RE.test(f)).map((h) => `sha256:${h}`);
  }

  async unlinkManifest(host: string, name: string, m: LinkableManifest): Promise<void> {
    const subject = subjectOf(m.body);
    if (subject) await removeFile(this.paths.referrers(host, name, subject, m.digest));
    await removeFile(this.paths.part(host, name, '_manifests', hexOf(m.digest)));
    this.changes++;
  }

  async unlinkBlob(host: string, name: string, digest: string): Promise<void> {
    await removeFile(this.paths.part(host, name, '_blobs', hexOf(digest)));
  }

  isBlobLinked(host: string, name: string, digest: string): Promise<boolean> {
    return exists(this.paths.part(host, name, '_blobs', hexOf(digest)));
  }

  isManifestLinked(host: string, name: string, digest: string): Promise<boolean> {
    return exists(this.paths.part(host, name, '_manifests', hexOf(digest)));
  }

  async linkedManifests(host: string, name: string): Promise<string[]> {
    return (await listDir(this.paths.part(host, name, '_manifests'))).filter((f) => HEX_RE.test(f)).map((h) => `sha256:${h}`);
  }

  async referrers(host: string, name: string, subject: string): Promise<Descriptor[]> {
    const dir = this.paths.referrers(host, name, subject);
    const out: Descriptor[] = [];
    for (const f of await listDir(dir)) {
      if (!HEX_RE.test(f)) continue;
      out.push(JSON.parse(await readFile(join(dir, f), 'utf8')) as Descriptor);
    }
    return out.sort((a, b) => a.digest.localeCompare(b.digest));
  }

  putManifestType(digest: string, t: ManifestType): Promise<void> {
    return this.temp.writeAtomic(this.paths.manifestType(digest), JSON.stringify({ mediaType: t.mediaType, sizeBytes: t.sizeBytes }));
  }

  async deleteManifestType(digest: string): Promise<void> {
    await removeFile(this.paths.manifestType(digest));
  }

  async manifestType(digest: string): Promise<ManifestType | undefined> {
    try {
      return JSON.parse(await readFile(this.paths.manifestType(digest), 'utf8')) as ManifestType;
    } catch (e) {
      if (isNotFound(e) || isNotDir(e)) return undefined;
      throw e;
    }
  }

  async repositories(opts: { blobLinks?: boolean } = {}): Promise<RepositoryName[]> {
    const out: RepositoryName[] = [];
    const root = this.paths.repositoriesDir;
    const marks = opts.blobLinks ? ['_tags', '_manifests', '_blobs'] : ['_tags', '_manifests'];
    for (const host of await listDir(root)) await walkRepos(join(root, host), host, [], out, marks);
    return out;
  }

}

/** Digests kept per tag's history file: far more than any sensible gc `keep`. */
const MAX_HISTORY = 100;

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if (isNotFound(e) || isNotDir(e)) return undefined;
    throw e;
  }
}

async function removeFile(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if (isNotFound(e) || isNotDir(e)) return false;
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (isNotFound(e) || isNotDir(e)) return false;
    throw e;
  }
}

/** `marks`: the folders that make a folder a repository (`_tags`, `_manifests`, and for gc `_blobs`). */
async function walkRepos(dir: string, host: string, parts: string[], out: RepositoryName[], marks: string[]): Promise<void> {
  for (const entry of await listDir(dir)) {
    if (marks.includes(entry)) {
      if (!out.some((r) => r.host === host && r.name === parts.join('/'))) out.push({ host, name: parts.join('/') });
      continue;
    }
    if (entry.startsWith('_')) continue;
    await walkRepos(join(dir, entry), host, [...parts, entry], out, marks);
  }
}
