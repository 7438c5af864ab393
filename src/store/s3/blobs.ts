// The BlobBackend on an S3-compatible object store (Ceph RGW, MinIO, AWS S3): blobs at
// `<prefix>blobs/sha256/<ab>/<hex>`, quarantined bytes at `<prefix>quarantine/<hex>.<ms>`. Bytes arrive in a local
// spool (local/spool.ts) and are uploaded only once verified, straight to their final key: an S3 PUT or a completed
// multipart upload becomes visible all at once, so no reader ever sees part of an object.
import { createReadStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  CopyObjectCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command, type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { RegistryError } from '../../oci/errors.js';
import { hexOf, HEX_RE } from '../digest.js';
import type { BlobBackend, BlobStat, BlobUsage, ByteRange, VerifiedSpool } from '../ports.js';
import { LocalSpool, type LocalSpoolArea } from '../local/spool.js';
import { BlobUsageCount } from '../local/usage.js';

/** Uploads above this go in parts of this size, several at once (lib-storage). */
const PART_BYTES = 16 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;
/**
 * A committed spool stays this long for readers that joined its download just as it ended (they open the spool,
 * and there is no local blob file to fall back to); then it goes. Readers holding it open keep their bytes.
 */
const SPOOL_GRACE_MS = 60_000;

export interface S3Location {
  bucket: string;
  /** "" or ending in "/". */
  prefix: string;
  /** Names the object store in messages (its endpoint, or AWS S3 and the region). */
  endpoint?: string;
  /** Blob GETs are redirected to presigned URLs valid this long (`storage.s3.redirect.ttl`); absent: no redirects. */
  redirectTtlSeconds?: number;
}

export class S3BlobBackend implements BlobBackend {
  private readonly counts = new BlobUsageCount((d) => this.statForCount(d), (prefix) => this.listPrefix(prefix));
  /** Sizes seen by the last listing, so the first count needs no HEAD per blob. */
  private readonly listed = new Map<string, number>();
  /** Commits per digest run one after another in this process, so "was it there already?" is exact here. */
  private readonly commits = new Map<string, Promise<void>>();
  private readonly graceTimers = new Set<NodeJS.Timeout>();
  /** The listing the current count reads from. */
  private cursor: { items: AsyncGenerator<{ digest: string; sizeBytes: number }>; next: IteratorResult<{ digest: string; sizeBytes: number }> | undefined } | undefined;

  /** Set only when redirects are configured: the store offers them exactly when this exists. */
  readonly presign: ((digest: string) => Promise<string>) | undefined;

  private constructor(
    private readonly s3: S3Client,
    private readonly where: S3Location,
    readonly spools: LocalSpoolArea,
  ) {
    const ttl = where.redirectTtlSeconds;
    if (ttl !== undefined) this.presign = (digest) => this.signedGet(digest, ttl);
  }

  /** Checks the bucket answers (and exists) before anything listens. */
  static async open(s3: S3Client, where: S3Location, spools: LocalSpoolArea): Promise<S3BlobBackend> {
    try {
      await s3.send(new HeadBucketCommand({ Bucket: where.bucket }));
    } catch (e) {
      const why = isNotFound(e) ? 'does not exist (create it first)' : `cannot be reached: ${describe(e)}`;
      throw new Error(`S3 bucket "${where.bucket}" ${why}`);
    }
    return new S3BlobBackend(s3, where, spools);
  }

  key(digest: string): string {
    const hex = hexOf(digest);
    return `${this.where.prefix}blobs/sha256/${hex.slice(0, 2)}/${hex}`;
  }

  /** HEAD only: never reads the object. */
  async stat(digest: string): Promise<BlobStat | undefined> {
    try {
      const head = await this.s3.send(new HeadObjectCommand({ Bucket: this.where.bucket, Key: this.key(digest) }));
      return { sizeBytes: head.ContentLength ?? 0, ...(head.LastModified ? { committedMs: head.LastModified.getTime() } : {}) };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.unavailable(e);
    }
  }

  /** A GET of the object signed with this replica's credentials, valid `ttl` seconds: signing is local, no request is sent. */
  private async signedGet(digest: string, ttl: number): Promise<string> {
    try {
      return await getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.where.bucket, Key: this.key(digest) }), { expiresIn: ttl });
    } catch (e) {
      // The credentials could not be had (an instance role's endpoint down): the object store is not usable.
      throw this.unavailable(e);
    }
  }

  /** A ranged GET; the response's headers have arrived, so a vanished object is a miss, not a cut. */
  async read(digest: string, range: ByteRange): Promise<Readable | undefined> {
    if (range.end < range.start) return (await this.stat(digest)) ? Readable.from([]) : undefined;
    try {
      const got = await this.s3.send(new GetObjectCommand({ Bucket: this.where.bucket, Key: this.key(digest), Range: `bytes=${range.start}-${range.end}` }));
      if (!(got.Body instanceof Readable)) throw new Error('the S3 client returned no Node stream');
      return got.Body;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.unavailable(e);
    }
  }

  async readAll(digest: string): Promise<Buffer | undefined> {
    try {
      const got = await this.s3.send(new GetObjectCommand({ Bucket: this.where.bucket, Key: this.key(digest) }));
      return Buffer.from((await got.Body?.transformToByteArray()) ?? []);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.unavailable(e);
    }
  }

  /** 503 naming the object store: it is down, hangs past the client's bounds, or refuses (never "internal error"). */
  private unavailable(e: unknown): RegistryError {
    if (e instanceof RegistryError) return e;
    const where = this.where.endpoint ?? 'the object store';
    return new RegistryError('UNAVAILABLE', `the object store at ${where} (bucket ${this.where.bucket}) is unreachable or failing: ${describe(e)}`,
      { objectStore: where, bucket: this.where.bucket });
  }

  createSpool(expectBytes?: number): Promise<LocalSpool> {
    return this.spools.createSpool(expectBytes);
  }

  commit(verified: VerifiedSpool): Promise<void> {
    if (!(verified.spool instanceof LocalSpool)) throw new Error('S3BlobBackend commits only its own spools');
    const { digest } = verified;
    const run = (this.commits.get(digest) ?? Promise.resolve()).then(() => this.upload(verified.spool as LocalSpool, verified));
    this.commits.set(digest, run);
    const forget = (): void => {
      if (this.commits.get(digest) === run) this.commits.delete(digest);
    };
    run.then(forget, forget);
    return run;
  }

  /** Verified bytes go straight to the final key; one already there (same digest, same bytes) is kept. */
  private async upload(spool: LocalSpool, verified: VerifiedSpool): Promise<void> {
    if (!(await this.stat(verified.digest))) {
      await this.counts.adding(verified.digest, verified.sizeBytes, async () => {
        const upload = new Upload({
          client: this.s3,
          params: {
            Bucket: this.where.bucket,
            Key: this.key(verified.digest),
            Body: verified.sizeBytes === 0 ? Buffer.alloc(0) : createReadStream(spool.path),
            ContentLength: verified.sizeBytes,
            ContentType: 'application/octet-stream',
          },
          partSize: PART_BYTES,
          queueSize: PARTS_IN_FLIGHT,
          leavePartsOnError: false,
        });
        await upload.done();
        const landed = await this.stat(verified.digest);
        if (landed?.sizeBytes !== verified.sizeBytes) {
          throw new Error(`S3 holds ${String(landed?.sizeBytes)} bytes for ${verified.digest} after uploading ${verified.sizeBytes}`);
        }
      });
    }
    this.dropLater(spool.path);
  }

  private dropLater(path: string): void {
    const timer = setTimeout(() => {
      this.graceTimers.delete(timer);
      unlink(path).catch(() => undefined);
    }, SPOOL_GRACE_MS);
    timer.unref();
    this.graceTimers.add(timer);
  }

  async delete(digest: string): Promise<boolean> {
    const size = (await this.stat(digest))?.sizeBytes;
    if (size === undefined) return false;
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.where.bucket, Key: this.key(digest) }));
    this.counts.change(digest, -1, -size);
    return true;
  }

  /** Copied aside, then removed from service (a server-side copy: objects up to 5 GiB, which every blob here is). */
  async quarantine(digest: string): Promise<string> {
    const size = (await this.stat(digest))?.sizeBytes ?? 0;
    const dest = `${this.where.prefix}quarantine/${hexOf(digest)}.${Date.now()}`;
    await this.s3.send(new CopyObjectCommand({ Bucket: this.where.bucket, Key: dest, CopySource: `${this.where.bucket}/${this.key(digest)}` }));
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.where.bucket, Key: this.key(digest) }));
    this.counts.change(digest, -1, -size);
    return `s3://${this.where.bucket}/${dest}`;
  }

  async *list(): AsyncGenerator<string> {
    for await (const page of this.pages(`${this.where.prefix}blobs/sha256/`)) yield* page.map((o) => o.digest);
  }

  /**
   * The count goes prefix by prefix (local/usage.ts); S3 lists in key order, so one listing of every blob serves all
   * 256 prefixes in turn (a page holds 1000 keys) instead of a request per prefix.
   */
  private async listPrefix(prefix: string): Promise<string[]> {
    if (prefix === '00' || !this.cursor) this.cursor = { items: this.items(), next: undefined };
    const c = this.cursor;
    const out: string[] = [];
    for (;;) {
      c.next ??= await c.items.next();
      if (c.next.done === true) break;
      const item = c.next.value;
      if (hexOf(item.digest).slice(0, 2) > prefix) break;
      c.next = undefined;
      this.listed.set(item.digest, item.sizeBytes);
      out.push(item.digest);
    }
    return out;
  }

  private async *items(): AsyncGenerator<{ digest: string; sizeBytes: number }> {
    for await (const page of this.pages(`${this.where.prefix}blobs/sha256/`)) yield* page;
  }

  private async *pages(prefix: string): AsyncGenerator<Array<{ digest: string; sizeBytes: number }>> {
    let token: string | undefined;
    do {
      const got = await this.s3.send(new ListObjectsV2Command({ Bucket: this.where.bucket, Prefix: prefix, ContinuationToken: token }));
      const page = (got.Contents ?? []).flatMap((o) => {
        const hex = o.Key?.slice(o.Key.lastIndexOf('/') + 1) ?? '';
        return HEX_RE.test(hex) ? [{ digest: `sha256:${hex}`, sizeBytes: o.Size ?? 0 }] : [];
      });
      yield page;
      token = got.IsTruncated ? got.NextContinuationToken : undefined;
    } while (token);
  }

  /** The first count uses the listing's sizes; a digest changed while counting is looked at again. */
  private async statForCount(digest: string): Promise<BlobStat | undefined> {
    const listed = this.listed.get(digest);
    this.listed.delete(digest);
    return listed !== undefined ? { sizeBytes: listed } : this.stat(digest);
  }

  /**
   * Listed once when first asked, then kept current by this replica's commits and deletes; blobs another replica
   * commits show after `refresh()` (the status job's recount) or a restart.
   */
  usage(): Promise<BlobUsage> {
    return this.counts.get();
  }

  refresh(): void {
    this.counts.reset();
  }

  scratchDir(prefix: string): Promise<string> {
    return this.spools.scratchDir(prefix);
  }

  async close(): Promise<void> {
    for (const t of this.graceTimers) clearTimeout(t);
    this.graceTimers.clear();
    await this.spools.close();
  }
}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  return err?.name === 'NotFound' || err?.name === 'NoSuchKey' || err?.name === 'NoSuchBucket' || err?.$metadata?.httpStatusCode === 404;
}

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
