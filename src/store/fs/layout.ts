// Every path of a filesystem store, named once (the layout every release used): blobs, spools, quarantine,
// manifest media types, each repository's tags, links, referrers and tag history, and the state documents.
import { join } from 'node:path';
import { hexOf } from '../digest.js';

/** The per-repository folders; a folder holding `_tags` or `_manifests` is a repository. */
export const REPOSITORY_PARTS = ['_tags', '_manifests', '_blobs', '_referrers', '_history'] as const;
export type RepositoryPart = (typeof REPOSITORY_PARTS)[number];

export class FsLayout {
  constructor(readonly root: string) {}

  /** `blobs/sha256`: one folder per two-hex prefix below it. */
  get blobsDir(): string {
    return join(this.root, 'blobs', 'sha256');
  }

  blobPrefixDir(prefix: string): string {
    return join(this.blobsDir, prefix);
  }

  /** `blobs/sha256/<ab>/<hex>` */
  blob(digest: string): string {
    const hex = hexOf(digest);
    return join(this.blobPrefixDir(hex.slice(0, 2)), hex);
  }

  /** `quarantine/<hex>.<ms>`: bytes verify --repair took out of service. */
  quarantine(digest: string, atMs: number): string {
    return join(this.root, 'quarantine', `${hexOf(digest)}.${atMs}`);
  }

  /** `tmp/`: one spool folder per process, `tmp/<pid>-<random>`. */
  get spoolsDir(): string {
    return join(this.root, 'tmp');
  }

  /** `manifests/sha256/<ab>/<hex>.json`: `{"mediaType","sizeBytes"}`. */
  manifestType(digest: string): string {
    const hex = hexOf(digest);
    return join(this.root, 'manifests', 'sha256', hex.slice(0, 2), `${hex}.json`);
  }

  /** `commits/`: a mark file per committing process and gc's lock file (store/commit-gate.ts). */
  get commitsDir(): string {
    return join(this.root, 'commits');
  }

  /** `repositories/` */
  get repositoriesDir(): string {
    return join(this.root, 'repositories');
  }

  /** `repositories/<host>/<name…>`; host and name were validated by the reference grammar (no '..'). */
  repository(host: string, name: string): string {
    return join(this.repositoriesDir, host, ...name.split('/'));
  }

  /** `repositories/<host>/<name…>/<part>[/<entry>]`: `_tags/<tag>` (the digest), `_manifests/<hex>` (the media
   * type), `_blobs/<hex>` (empty), `_history/<tag>` (one "<digest> <ISO time>" line per move, oldest first). */
  part(host: string, name: string, part: RepositoryPart, entry?: string): string {
    const dir = join(this.repository(host, name), part);
    return entry === undefined ? dir : join(dir, entry);
  }

  /** `repositories/<host>/<name…>/_referrers/<subject-hex>[/<hex>]`: the referrer's descriptor as JSON. */
  referrers(host: string, name: string, subject: string, digest?: string): string {
    const dir = this.part(host, name, '_referrers', hexOf(subject));
    return digest === undefined ? dir : join(dir, hexOf(digest));
  }

  get allowlist(): string {
    return join(this.root, 'allowlist.json');
  }

  /** The lock serialising allowlist edits across processes. */
  static lockOf(document: string): string {
    return `${document}.lock`;
  }

  get denied(): string {
    return join(this.root, 'denied.json');
  }

  get window(): string {
    return join(this.root, 'window.json');
  }
}
