// Fault injection against a real `sluice serve` process: the fake upstream cuts a 64 MiB blob at 10, 50
// and 99 %, sends wrong bytes of the right length, short bodies (honest and lying Content-Length) and stalls;
// `kill -9` mid-ingest and a restart; a full disk (a 16 MiB tmpfs). Nothing corrupt is ever served or kept.
import { execFileSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, statfs } from 'node:fs/promises';
import { request, Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import type { BlobBehaviour } from '../helpers/mini-blob.js';
import { MiniUpstream, miniImage } from '../helpers/mini-upstream.js';
import { KiB, MediaType, MiB, sha256 } from '../kit/oci.js';

const BIG_BYTES = 64 * MiB;
const NAME = 'library/big';

// ---------------------------------------------------------------------------------------------------------------
// The upstream: MiniUpstream serving library/big, its big layers' bodies scripted per case (cut, corrupted,
// short, stalled, chunked, held).

interface Image {
  tag: string;
  digest: string;
  manifestDigest: string;
}

const up = new MiniUpstream();

/** A new image `library/big:<tag>`: a small config and a fresh random layer (so every case starts uncached). */
function addImage(tag: string, sizeBytes = BIG_BYTES): Image {
  const img = up.push(miniImage(NAME, tag, [randomFillSync(Buffer.allocUnsafe(sizeBytes))], MediaType.ociLayerTar));
  return { tag, digest: img.layers[0]?.digest ?? '', manifestDigest: img.digest };
}

/** GETs of a blob so far. */
const getsOf = (digest: string): number => up.times(`GET /v2/${NAME}/blobs/${digest}`);

// ---------------------------------------------------------------------------------------------------------------
// The client: hashes what it receives, never buffers a 64 MiB body.

interface Got {
  status: number;
  contentLength: number | undefined;
  bytes: number;
  digest: string;
  /** Ended normally with every byte its Content-Length announced. */
  complete: boolean;
  /** The body of a small (error or manifest) answer. */
  text: string;
  /** The transport error, if the request failed before any response. */
  error?: string;
}

const agent = new Agent({ keepAlive: false });

function get(url: string, onBytes?: (n: number) => void): Promise<Got> {
  return new Promise((resolve) => {
    const req = request(url, { agent }, (res) => {
      const hash = createHash('sha256');
      const small: Buffer[] = [];
      let bytes = 0;
      let ended = false;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
        if (bytes <= 64 * KiB) small.push(c);
        onBytes?.(bytes);
      });
      res.on('end', () => void (ended = true));
      res.on('error', () => undefined);
      res.on('close', () => {
        const cl = res.headers['content-length'];
        resolve({
          status: res.statusCode ?? 0,
          contentLength: cl === undefined ? undefined : Number(cl),
          bytes,
          digest: `sha256:${hash.digest('hex')}`,
          complete: ended && res.complete && (cl === undefined || Number(cl) === bytes),
          text: Buffer.concat(small).toString('utf8'),
        });
      });
    });
    req.on('error', (e) => resolve({ status: 0, contentLength: undefined, bytes: 0, digest: '', complete: false, text: '', error: e.message }));
    req.end();
  });
}

/** A failed transfer as a client sees it: never a complete 2xx; an error status carries an OCI error body. */
function expectFailed(got: Got, label: string): void {
  expect(got.complete && got.status >= 200 && got.status < 300, `${label}: a complete ${got.status} with ${got.bytes} bytes`).toBe(false);
  if (got.status >= 400) expect(JSON.parse(got.text) as unknown, label).toMatchObject({ errors: [{ code: expect.any(String) }] });
  if (got.status === 200) expect(got.bytes, `${label}: a 200 must be cut short`).toBeLessThan(got.contentLength ?? Infinity);
}

// ---------------------------------------------------------------------------------------------------------------
// Sluice as a process, and what it leaves on disk and in its log.

interface LogEntry {
  msg?: string;
  digest?: string;
  error?: string;
  level?: number;
}

function logEntries(p: SluiceProcess): LogEntry[] {
  return p.stdout().split('\n').flatMap((line) => {
    try {
      return [JSON.parse(line) as LogEntry];
    } catch {
      return [];
    }
  });
}

/** Polls the process's log (there is no event across processes) until an entry matches; bounded. */
async function waitForLog(p: SluiceProcess, match: (e: LogEntry) => boolean, what: string, timeoutMs = 15_000): Promise<LogEntry> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = logEntries(p).find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no log entry for ${what} within ${timeoutMs} ms; stdout tail:\n${p.stdout().slice(-2000)}`);
    await delay(20);
  }
}

/** Every file in every process's temp folder `<storage>/tmp/<pid>-<rand>/`. */
async function tempFiles(storage: string): Promise<Array<{ path: string; sizeBytes: number }>> {
  const out: Array<{ path: string; sizeBytes: number }> = [];
  const root = join(storage, 'tmp');
  for (const dir of await readdir(root).catch(() => [] as string[])) {
    for (const f of await readdir(join(root, dir)).catch(() => [] as string[])) {
      const s = await stat(join(root, dir, f)).catch(() => undefined);
      if (s) out.push({ path: join(root, dir, f), sizeBytes: s.size });
    }
  }
  return out;
}

const committedPath = (storage: string, digest: string): string => join(storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

async function committed(storage: string, digest: string): Promise<boolean> {
  return stat(committedPath(storage, digest)).then(() => true, () => false);
}

async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return `sha256:${h.digest('hex')}`;
}

const dirs: string[] = [];
const processes: SluiceProcess[] = [];

async function newDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `sluice-faults-${prefix}-`));
  dirs.push(d);
  return d;
}

async function startSluice(dir: string, storage: string, upstreamUrl: string, opts: { windows?: string; idle?: string } = {}): Promise<SluiceProcess> {
  const yaml = sluiceConfigYaml(storage, {
    windows: opts.windows ?? 'always',
    upstreams: { 'docker.io': { url: upstreamUrl } },
    allowlist: [`docker.io/${NAME}`],
    extra: { upstreamTimeouts: { connect: '2s', idle: opts.idle ?? '1s' } },
  });
  const p = await startSluiceProcess(yaml, { dir });
  processes.push(p);
  return p;
}


beforeAll(async () => {
  await up.start();
});

afterAll(async () => {
  for (const p of processes) await p.stop('SIGKILL');
  await up.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const blobUrl = (p: SluiceProcess, digest: string): string => `${p.url}/v2/${NAME}/blobs/${digest}?ns=docker.io`;
const manifestUrl = (p: SluiceProcess, ref: string): string => `${p.url}/v2/${NAME}/manifests/${ref}?ns=docker.io`;

// ---------------------------------------------------------------------------------------------------------------

describe('upstream faults on a 64 MiB blob (real sluice process, idle timeout 1 s)', () => {
  let sluice: SluiceProcess;
  let storage: string;

  beforeAll(async () => {
    const dir = await newDir('upstream');
    storage = join(dir, 'data');
    sluice = await startSluice(dir, storage, up.url);
  });

  const cases: Array<{ label: string; fault: BlobBehaviour; log: RegExp }> = [
    { label: 'connection cut at 10 %', fault: { cutAtPercent: 10, reset: true }, log: /closed unexpectedly|reset|other side closed|terminated/ },
    { label: 'connection cut at 50 %', fault: { cutAtPercent: 50, reset: true }, log: /closed unexpectedly|reset|other side closed|terminated/ },
    { label: 'connection cut at 99 %', fault: { cutAtPercent: 99, reset: true }, log: /closed unexpectedly|reset|other side closed|terminated/ },
    { label: 'wrong bytes, right length (middle byte flipped)', fault: { corrupt: true }, log: /does not verify as sha256:[0-9a-f]{64}: content does not match its digest/ },
    { label: 'wrong bytes, right length (last byte flipped)', fault: { corrupt: 'last' }, log: /does not verify as sha256:[0-9a-f]{64}: content does not match its digest/ },
    { label: 'short body, honest Content-Length', fault: { shortBytes: 32 * MiB }, log: /does not verify as sha256:[0-9a-f]{64}: content does not match its digest/ },
    { label: 'short body, lying Content-Length (clean close)', fault: { shortBytes: 40 * MiB, lyingLength: true }, log: /closed unexpectedly|other side closed|terminated|shorter than its descriptor/ },
    { label: 'body stalls at 50 % (idle timeout)', fault: { stallAtPercent: 50 }, log: /stopped sending the body \(idle timeout\)/ },
  ];

  for (const c of cases) {
    it(`${c.label}: the client gets an error, nothing is committed or left behind, the log says why, the next pull succeeds`, async () => {
      const img = addImage(c.label.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase().slice(0, 100));
      try {
        const m = await get(manifestUrl(sluice, img.tag));
        expect(m.status).toBe(200);
        expect(m.digest).toBe(img.manifestDigest);
        const logsBefore = logEntries(sluice).length;

        up.behaviour.set(img.digest, c.fault);
        const first = await get(blobUrl(sluice, img.digest));
        expectFailed(first, `${c.label}, first attempt`);
        const failure = await waitForLog(sluice, (e) => e.msg === 'blob ingest failed; nothing committed' && e.digest === img.digest, c.label);
        expect(failure.error).toMatch(c.log);
        expect(logEntries(sluice).slice(logsBefore).some((e) => e.msg === 'blob ingested from upstream' && e.digest === img.digest)).toBe(false);
        expect(await committed(storage, img.digest)).toBe(false);
        expect(await tempFiles(storage)).toEqual([]);

        // Still broken: a second attempt fails the same way (the failure was not cached as content).
        const second = await get(blobUrl(sluice, img.digest));
        expectFailed(second, `${c.label}, second attempt`);
        await waitForLog(sluice, (e) => e.msg === 'blob ingest failed; nothing committed' && e.digest === img.digest && e !== failure, `${c.label} again`);
        expect(await committed(storage, img.digest)).toBe(false);
        expect(await tempFiles(storage)).toEqual([]);

        // Fixed: the next pull succeeds, verifies, and is then served from disk.
        up.behaviour.clear();
        const fixed = await get(blobUrl(sluice, img.digest));
        expect(fixed).toMatchObject({ status: 200, complete: true, bytes: BIG_BYTES, digest: img.digest });
        await waitForLog(sluice, (e) => e.msg === 'blob ingested from upstream' && e.digest === img.digest, `${c.label} fixed`);
        expect(await fileDigest(committedPath(storage, img.digest))).toBe(img.digest);
        const gets = getsOf(img.digest);
        expect(gets).toBe(3);
        const cached = await get(blobUrl(sluice, img.digest));
        expect(cached).toMatchObject({ status: 200, complete: true, digest: img.digest });
        expect(getsOf(img.digest)).toBe(gets);
        expect(await tempFiles(storage)).toEqual([]);
      } finally {
        up.behaviour.clear();
        up.blobs.delete(img.digest);
      }
    });
  }

  it('the process stayed up through every fault', () => {
    expect(sluice.proc.exitCode).toBeNull();
    expect(sluice.stderr()).not.toMatch(/Unhandled|uncaught/i);
  });
});

describe('kill -9 mid-ingest, then restart on the same store', () => {
  it('leaves no temp file after restart, never serves the partial blob, and the next pull in a window succeeds', async () => {
    const dir = await newDir('kill9');
    const storage = join(dir, 'data');
    const img = addImage('kill9');
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    // 24 MiB out, then the rest only once released.
    up.behaviour.set(img.digest, { chunkBytes: 24 * MiB, beforeChunk: async (i) => void (i === 1 && (await released)) });
    try {
      const first = await startSluice(dir, storage, up.url, { idle: '30s' });
      const pending = get(blobUrl(first, img.digest));
      // No event crosses the process boundary: poll the temp file's growth, bounded.
      const deadline = Date.now() + 15_000;
      let partial: Array<{ path: string; sizeBytes: number }> = [];
      while (Date.now() < deadline) {
        partial = await tempFiles(storage);
        if (partial.some((f) => f.sizeBytes >= 16 * MiB)) break;
        await delay(20);
      }
      expect(partial.some((f) => f.sizeBytes >= 16 * MiB), 'the ingest never reached 16 MiB on disk').toBe(true);
      expect(await first.stop('SIGKILL')).toBe('SIGKILL');
      expectFailed(await pending, 'client of the killed process');
      // The precondition: a crash really leaves a partial temp file behind.
      expect((await tempFiles(storage)).some((f) => f.sizeBytes >= 16 * MiB)).toBe(true);
      expect(await committed(storage, img.digest)).toBe(false);

      // Restart outside a window: the dead process's temp folder is gone and the blob is not present.
      const gets = getsOf(img.digest);
      const closed = await startSluice(dir, storage, up.url, { windows: 'never' });
      expect(await tempFiles(storage)).toEqual([]);
      const miss = await get(blobUrl(closed, img.digest));
      expect(miss.status).toBe(404);
      expect(JSON.parse(miss.text)).toMatchObject({ errors: [{ code: 'BLOB_UNKNOWN' }] });
      const head = await new Promise<number>((resolve) => {
        request(blobUrl(closed, img.digest), { method: 'HEAD', agent }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', () => resolve(0)).end();
      });
      expect(head).toBe(404);
      expect(getsOf(img.digest)).toBe(gets);
      expect(await closed.stop()).toBe(0);

      // Restart inside a window with the upstream healthy: refetched, verified, committed.
      up.behaviour.clear();
      const open = await startSluice(dir, storage, up.url);
      expect(await tempFiles(storage)).toEqual([]);
      const got = await get(blobUrl(open, img.digest));
      expect(got).toMatchObject({ status: 200, complete: true, bytes: BIG_BYTES, digest: img.digest });
      expect(getsOf(img.digest)).toBe(gets + 1);
      await waitForLog(open, (e) => e.msg === 'blob ingested from upstream' && e.digest === img.digest, 'refetch');
      expect(await fileDigest(committedPath(storage, img.digest))).toBe(img.digest);
      expect(await open.stop()).toBe(0);
    } finally {
      release();
      up.behaviour.clear();
      up.blobs.delete(img.digest);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// ENOSPC: the store on a 16 MiB tmpfs. Mounting needs root (CAP_SYS_ADMIN); without it the suite is skipped loudly.

async function probeMount(): Promise<boolean> {
  const probe = await mkdtemp(join(tmpdir(), 'sluice-faults-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe], { stdio: 'pipe' });
    execFileSync('umount', [probe], { stdio: 'pipe' });
    return true;
  } catch (e) {
    const bar = '!'.repeat(78);
    console.warn(`\n${bar}\n!!! SKIPPING the ENOSPC fault test: cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)\n!!! ${String((e as Error).message).split('\n')[0]}\n${bar}\n`);
    return false;
  } finally {
    await rm(probe, { recursive: true, force: true });
  }
}

const canMount = await probeMount();

describe.skipIf(!canMount)('the store\'s disk is full (ENOSPC on a 16 MiB tmpfs)', () => {
  let mnt: string | undefined;

  afterAll(() => {
    if (mnt) execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
  });

  it('a blob too big for the disk is refused with 507 INSUFFICIENT_STORAGE; nothing corrupt or temporary remains; cached content still serves', async () => {
    const dir = await newDir('enospc');
    mnt = join(dir, 'mnt');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mnt], { stdio: 'pipe' });
    const storage = join(mnt, 'data');
    const small = addImage('small', 1 * MiB);
    const big = addImage('enospc');
    const tens = [addImage('ten-a', 10 * MiB), addImage('ten-b', 10 * MiB)];
    const failures = (p: SluiceProcess, digest: string): LogEntry[] =>
      logEntries(p).filter((e) => e.msg === 'blob ingest failed; nothing committed' && e.digest === digest);
    const clean = async (): Promise<void> => {
      expect(await tempFiles(storage)).toEqual([]);
      // The space is really given back (no unlinked-but-open temp file holds it).
      const fs = await statfs(mnt as string);
      expect(fs.bavail * fs.bsize).toBeGreaterThan(12 * MiB);
    };
    try {
      const sluice = await startSluice(dir, storage, up.url);
      for (const img of [small, big, ...tens]) expect((await get(manifestUrl(sluice, img.tag))).status).toBe(200);
      expect(await get(blobUrl(sluice, small.digest))).toMatchObject({ status: 200, complete: true, digest: small.digest });
      const smallGets = getsOf(small.digest);

      // 1. The upstream declares 64 MiB: refused before the first byte is written, with an OCI error.
      const started = Date.now();
      const declared = await get(blobUrl(sluice, big.digest));
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(declared.status).toBe(507);
      expect(JSON.parse(declared.text)).toMatchObject({ errors: [{ code: 'INSUFFICIENT_STORAGE', message: expect.stringMatching(/store is full/) }] });
      await waitForLog(sluice, () => failures(sluice, big.digest).length === 1, 'refusal');
      expect(failures(sluice, big.digest)[0]?.error).toMatch(/store is full/);
      expect(await committed(storage, big.digest)).toBe(false);
      await clean();

      // 2. No Content-Length: the disk fills mid-write. sluice waits for the verified file before answering
      //    such a blob, so the client still gets the status, not a cut.
      up.behaviour.set(big.digest, { noLength: true });
      const chunked = await get(blobUrl(sluice, big.digest));
      expect(chunked.status).toBe(507);
      expect(JSON.parse(chunked.text)).toMatchObject({ errors: [{ code: 'INSUFFICIENT_STORAGE' }] });
      await waitForLog(sluice, () => failures(sluice, big.digest).length === 2, 'ENOSPC mid-write');
      expect(failures(sluice, big.digest)[1]?.error).toMatch(/store is full/);
      expect(await committed(storage, big.digest)).toBe(false);
      await clean();
      up.behaviour.clear();

      // 3. Two 10 MiB blobs at once: each fits alone, not both. Whichever hits ENOSPC mid-stream is cut
      //    (its headers are out), never completed; whatever completes is exact.
      const both = await Promise.all(tens.map((img) => get(blobUrl(sluice, img.digest))));
      const done = both.filter((g) => g.complete);
      expect(done.length).toBeLessThan(2);
      for (const [i, g] of both.entries()) {
        if (g.complete) expect(g).toMatchObject({ status: 200, digest: tens[i]?.digest });
        else expectFailed(g, `concurrent ${i}`);
        if (!g.complete) await waitForLog(sluice, () => failures(sluice, tens[i]?.digest ?? '').length === 1, `concurrent ${i}`);
        expect(await committed(storage, tens[i]?.digest ?? '')).toBe(g.complete);
      }
      expect(failures(sluice, tens[0]?.digest ?? '').concat(failures(sluice, tens[1]?.digest ?? ''))
        .some((e) => /store is full/.test(e.error ?? ''))).toBe(true);
      expect(await tempFiles(storage)).toEqual([]);

      // Healthy: the API answers and the cached small image serves from disk.
      expect((await get(`${sluice.url}/v2/`)).status).toBe(200);
      expect(await get(blobUrl(sluice, small.digest))).toMatchObject({ status: 200, complete: true, digest: small.digest });
      expect(await get(manifestUrl(sluice, small.tag))).toMatchObject({ status: 200, digest: small.manifestDigest });
      expect(getsOf(small.digest)).toBe(smallGets);

      // The operator grows the disk: the next pull in the window succeeds and verifies.
      execFileSync('mount', ['-o', 'remount,size=160m', mnt], { stdio: 'pipe' });
      const retry = await get(blobUrl(sluice, big.digest));
      expect(retry).toMatchObject({ status: 200, complete: true, bytes: BIG_BYTES, digest: big.digest });
      expect(await fileDigest(committedPath(storage, big.digest))).toBe(big.digest);
      expect(sluice.proc.exitCode).toBeNull();
      expect(sluice.stderr()).not.toMatch(/Unhandled|uncaught/i);
      expect(await sluice.stop()).toBe(0);
    } finally {
      up.behaviour.clear();
      for (const img of [big, ...tens]) up.blobs.delete(img.digest);
    }
  });
});
