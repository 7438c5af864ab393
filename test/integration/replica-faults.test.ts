// Two replicas on the real PostgreSQL and Ceph RGW, each reaching them through its own TCP proxy the test controls
// (refuse, freeze = half-open, slow, restore): a replica that cannot confirm shared state fails closed, every answer
// comes within its bound and names the engine at fault, a close or a removal once acknowledged is never undone.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { FaultProxy } from '../kit/fault-proxy.js';
import { ACCEPT_MANIFESTS, MiB, sha256 } from '../kit/oci.js';
import { tempDir } from '../helpers/clients.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { freePort } from '../helpers/registry.js';
import { freshBucket, freshDatabase, requireServices, s3Config, s3Env } from '../helpers/services.js';
import { runSluice, sluiceConfigYaml, startSluice, type InProcessSluice } from '../helpers/sluice.js';

const SUITE = 'test/integration/replica-faults.test.ts';
const ok = requireServices(['s3', 'postgres'], SUITE);

/** Short bounds, so the suite runs in bounded time; each failed request must answer within ANSWER_BOUND_MS. */
const PG_BOUNDS = { connectTimeout: '1s', queryTimeout: '2s', freshness: '3s' };
const S3_BOUNDS = { connectTimeout: '1s', requestTimeout: '2s', maxAttempts: 1 };
const ANSWER_BOUND_MS = 5000;
const ACCEPT = { accept: ACCEPT_MANIFESTS };

interface Replica {
  s: InProcessSluice;
  pg: FaultProxy;
  s3: FaultProxy;
  token: string;
}

interface Answer {
  status: number;
  body: Buffer;
  ms: number;
  message: string;
}

const hostPortOf = (url: string): { host: string; port: number } => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
};

/** A request answered (or cut) within the bound; the OCI error message when there is one. */
async function ask(url: string, init: RequestInit = {}): Promise<Answer> {
  const started = Date.now();
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const body = Buffer.from(await res.arrayBuffer());
  let message = '';
  if (res.status >= 400 && body.length > 0) {
    const doc = JSON.parse(body.toString()) as { errors?: Array<{ message?: string }> };
    message = doc.errors?.[0]?.message ?? '';
  }
  return { status: res.status, body, ms: Date.now() - started, message };
}

async function admin(r: Replica, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown): Promise<Answer> {
  const started = Date.now();
  const res = await r.s.app.admin.inject({
    method, url, headers: { authorization: `Bearer ${r.token}`, ...(payload ? { 'content-type': 'application/json' } : {}) },
    ...(payload ? { payload: JSON.stringify(payload) } : {}),
  });
  const doc = res.statusCode >= 400 && res.body ? (JSON.parse(res.body) as { errors?: Array<{ message?: string }> }) : {};
  return { status: res.statusCode, body: res.rawPayload, ms: Date.now() - started, message: doc.errors?.[0]?.message ?? '' };
}

/** Resolves once `check` holds; fails after `ms` (state reached through timers and another connection). */
async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe.skipIf(!ok)('replicas behind faulty links to PostgreSQL and the object store', () => {
  let work: string;
  let upstream: MiniUpstream;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let direct: pg.Client;
  const running: Replica[] = [];
  let images: MiniImage[] = [];
  let chaos: MiniImage[] = [];

  const upstreamRequests = (): number => [...upstream.hits.values()].reduce((a, b) => a + b, 0);
  const manifestUrl = (r: Replica, i: MiniImage, ref = i.tag): string => `${r.s.url}/v2/${i.name}/manifests/${ref}?ns=docker.io`;
  const blobUrl = (r: Replica, i: MiniImage, digest: string): string => `${r.s.url}/v2/${i.name}/blobs/${digest}?ns=docker.io`;

  async function replica(id: string): Promise<Replica> {
    const pgProxy = await FaultProxy.start(hostPortOf(db.url));
    const s3Proxy = await FaultProxy.start(hostPortOf(s3Env?.endpoint ?? ''));
    const dbUrl = new URL(db.url);
    dbUrl.host = pgProxy.hostPort;
    const path = join(work, id);
    await mkdir(path, { recursive: true });
    const s = await startSluice({
      windows: 'never',
      upstreams: { 'docker.io': { url: upstream.url } },
      extra: {
        storage: { path, s3: { ...s3Config(bucket.bucket, 'mirror/'), endpoint: `http://${s3Proxy.hostPort}`, ...S3_BOUNDS } },
        database: { postgres: { url: dbUrl.toString(), ...PG_BOUNDS } },
        admin: { listen: '127.0.0.1:0', tokenFile: join(work, 'admin.token') },
      },
    });
    const r = { s, pg: pgProxy, s3: s3Proxy, token: (await readFile(join(work, 'admin.token'), 'utf8')).trim() };
    running.push(r);
    return r;
  }

  /** A and B, the manual window open on both and `rules` on the allowlist (through A). */
  async function pair(rules: string[]): Promise<[Replica, Replica]> {
    const a = await replica(`a-${randomBytes(3).toString('hex')}`);
    const b = await replica(`b-${randomBytes(3).toString('hex')}`);
    const added = await admin(a, 'POST', '/api/v1/allowlist', { rules });
    expect(added.status, added.message).toBe(200);
    const opened = await admin(a, 'POST', '/api/v1/window', { duration: '1h', note: 'fault test' });
    expect(opened.status, opened.message).toBe(200);
    await until('B to see the window open', () => b.s.app.window.isOpen());
    await until('B to see the rules', () => rules.every((rule) => b.s.app.allowlist.list().some((x) => x.rule === rule)));
    return [a, b];
  }

  /** Pulls an image (manifest, config, layers) and checks every byte against its digest. */
  async function pull(r: Replica, i: MiniImage): Promise<Answer[]> {
    const m = await ask(manifestUrl(r, i), { headers: ACCEPT });
    if (m.status !== 200) return [m];
    expect(sha256(m.body)).toBe(i.digest);
    const answers = [m];
    for (const b of [i.config, ...i.layers]) {
      const got = await ask(blobUrl(r, i, b.digest));
      if (got.status === 200) expect(sha256(got.body)).toBe(b.digest);
      answers.push(got);
    }
    return answers;
  }

  beforeAll(async () => {
    work = await tempDir('replica-faults');
    upstream = await new MiniUpstream().start();
    images = Array.from({ length: 6 }, (_, n) => upstream.addImage(`library/img${n}`, 'v1', [randomBytes(2 * MiB), randomBytes(1024)]));
    chaos = Array.from({ length: 4 }, (_, n) => upstream.addImage(`library/chaos${n}`, 'v1', [randomBytes(MiB), randomBytes(512)]));
    [bucket, db] = await Promise.all([freshBucket(), freshDatabase()]);
    direct = new pg.Client({ connectionString: db.url });
    await direct.connect();
  }, 60_000);

  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.pg.restore();
      r.s3.restore();
      await r.s.close().catch(() => undefined);
      await Promise.all([r.pg.stop(), r.s3.stop()]);
    }
    // The next case starts with no replica alive in the database (an edit waits for every one listed there).
    await until('the last case\'s replicas to leave the database', async () =>
      (await direct.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'sluice-listen-%'")).rowCount === 0);
  });

  afterAll(async () => {
    await direct?.end().catch(() => undefined);
    await upstream?.stop();
    await bucket?.remove().catch(() => undefined);
    await db?.drop().catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('a window close that cannot be recorded says so naming the database, closes upstream here, and is written before any upstream request once the database is back', async () => {
    const [a, b] = await pair(['docker.io/library/img0']);
    a.pg.refuse();
    b.pg.refuse();
    // `sluice window close` through A's admin listener: exit 1 naming the database, at once.
    const adminPort = await freePort();
    await a.s.app.admin.listen({ host: '127.0.0.1', port: adminPort });
    const config = join(work, 'cli-window.yaml');
    await writeFile(config, sluiceConfigYaml(join(work, 'cli-window-data'), { extra: { admin: { listen: `127.0.0.1:${adminPort}`, tokenFile: join(work, 'admin.token') } } }));
    const started = Date.now();
    const closed = await runSluice(['window', 'close', '--config', config], { timeoutMs: 20_000 });
    expect(closed.code, closed.stderr).toBe(1);
    expect(closed.stderr).toContain(a.pg.hostPort);
    expect(closed.stderr).toMatch(/unreachable.*upstream access is closed on this replica/);
    expect(Date.now() - started).toBeLessThan(ANSWER_BOUND_MS + 2000); // the CLI's own start included
    expect(a.s.app.window.isOpen()).toBe(false);
    const before = upstreamRequests();
    expect((await ask(manifestUrl(a, images[0] as MiniImage), { headers: ACCEPT })).status).not.toBe(200);
    a.pg.restore();
    b.pg.restore();
    // From here on, neither replica may ask the upstream anything: the close is written first.
    await until('the close to be written', async () => {
      for (const r of [a, b]) await ask(manifestUrl(r, images[0] as MiniImage), { headers: ACCEPT });
      const { rows } = await direct.query<{ manual: unknown }>('SELECT manual FROM manual_window WHERE id = 1');
      return rows[0]?.manual === null;
    });
    await until('B to follow the close', () => !b.s.app.window.isOpen());
    await until('both replicas to vouch for the shared state again', () => [a, b].every((r) => r.s.app.store.unconfirmed() === undefined));
    for (const r of [a, b]) expect((await ask(manifestUrl(r, images[0] as MiniImage), { headers: ACCEPT })).status).toBe(404);
    expect(upstreamRequests()).toBe(before);
  }, 60_000);

  test('a replica whose database link is half-open stops serving a rule removed through the other, and the removal names it', async () => {
    const img = images[1] as MiniImage;
    const [a, b] = await pair([`docker.io/${img.name}`]);
    expect((await pull(b, img)).every((x) => x.status === 200)).toBe(true);
    b.pg.freeze();
    const removed = await admin(a, 'DELETE', '/api/v1/allowlist', { rules: [`docker.io/${img.name}`] });
    expect(removed.status).toBe(503);
    expect(removed.message).toContain(`replica ${b.s.app.store.replica ?? 'B'}`);
    const served = await ask(manifestUrl(b, img), { headers: ACCEPT });
    expect([403, 503]).toContain(served.status);
    expect(served.ms).toBeLessThan(ANSWER_BOUND_MS);
    const blob = await ask(blobUrl(b, img, img.layers[0]?.digest ?? ''));
    expect([403, 503]).toContain(blob.status);
    // A window closed through A: B, still cut off, sends nothing upstream (tags/list included). The close names B
    // unless B's session has left the database meanwhile (then B is no live replica, and fails closed anyway).
    const before = upstreamRequests();
    const closed = await admin(a, 'DELETE', '/api/v1/window');
    if (closed.status !== 200) expect(closed.message).toContain(`replica ${b.s.app.store.replica ?? 'B'}`);
    const tags = await ask(`${b.s.url}/v2/${(images[2] as MiniImage).name}/tags/list?ns=docker.io`);
    expect(tags.status).not.toBe(200);
    expect(upstreamRequests()).toBe(before);
    const status = JSON.parse((await admin(b, 'GET', '/api/v1/status')).body.toString()) as { sharedState?: { confirmed?: boolean; reason?: string } };
    expect(status.sharedState?.confirmed).toBe(false);
    expect((await admin(b, 'GET', '/metrics')).body.toString()).toMatch(/^sluice_shared_state_confirmed 0$/m);
  }, 60_000);

  test('every request is answered within its bound when the database hangs, naming it', async () => {
    const [, b] = await pair(['docker.io/library/img3']);
    b.pg.freeze();
    const started = Date.now();
    const answers = await Promise.all([
      ask(manifestUrl(b, images[3] as MiniImage, 'never-asked'), { headers: ACCEPT }),
      ask(blobUrl(b, images[3] as MiniImage, (images[3] as MiniImage).config.digest)),
      admin(b, 'POST', '/api/v1/allowlist', { rules: ['docker.io/library/img4'] }),
    ]);
    for (const got of answers) {
      expect(got.status).toBe(503);
      expect(got.message).toContain(b.pg.hostPort);
    }
    expect(Date.now() - started).toBeLessThan(ANSWER_BOUND_MS);
  }, 60_000);

  test('PostgreSQL refused: the registry and the admin API answer 503 naming the database, the CLI exits 1 naming it', async () => {
    const [, b] = await pair(['docker.io/library/img4']);
    b.pg.refuse();
    const got = await ask(manifestUrl(b, images[4] as MiniImage), { headers: ACCEPT });
    expect(got.status).toBe(503);
    expect(JSON.parse(got.body.toString())).toMatchObject({ errors: [{ code: 'UNAVAILABLE' }] });
    expect(got.message).toContain(b.pg.hostPort);
    const edit = await admin(b, 'POST', '/api/v1/allowlist', { rules: ['docker.io/library/img5'] });
    expect(edit.status).toBe(503);
    expect(edit.message).toContain(b.pg.hostPort);
    const dbUrl = new URL(db.url);
    dbUrl.host = b.pg.hostPort;
    const config = join(work, 'cli.yaml');
    await writeFile(config, sluiceConfigYaml(join(work, 'cli-data'), { extra: { database: { postgres: { url: dbUrl.toString(), ...PG_BOUNDS } }, admin: { listen: `127.0.0.1:${await freePort()}`, tokenFile: join(work, 'admin.token') } } }));
    const cli = await runSluice(['allow', 'ls', '--config', config], { timeoutMs: 20_000 });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(b.pg.hostPort);
    expect(cli.stderr).toMatch(/unreachable/);
  }, 60_000);

  test('the object store hanging or stopped mid-pull: a bounded 503 naming its endpoint, a cut stream, never a wrong byte', async () => {
    const img = images[5] as MiniImage;
    const [a, b] = await pair([`docker.io/${img.name}`]);
    expect((await pull(a, img)).every((x) => x.status === 200)).toBe(true);
    const layer = img.layers[0]?.digest ?? '';
    b.s3.freeze();
    const hung = await ask(blobUrl(b, img, layer));
    expect(hung.status).toBe(503);
    expect(hung.message).toContain(b.s3.hostPort);
    expect(hung.ms).toBeLessThan(ANSWER_BOUND_MS);
    b.s3.restore();
    // Mid-pull: the first bytes arrive, then the object store stops answering; the stream is cut within the bound.
    b.s3.slow(200);
    const res = await fetch(blobUrl(b, img, layer), { signal: AbortSignal.timeout(30_000) });
    expect(res.status, res.status === 200 ? '' : await res.clone().text()).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let received = (await reader.read()).value?.length ?? 0;
    b.s3.freeze();
    const started = Date.now();
    let cut = false;
    try {
      for (let r = await reader.read(); !r.done; r = await reader.read()) received += r.value.length;
    } catch {
      cut = true;
    }
    expect(cut).toBe(true);
    expect(received).toBeLessThan(img.layers[0]?.body.length ?? 0);
    expect(Date.now() - started).toBeLessThan(ANSWER_BOUND_MS);
  }, 60_000);

  test('under a stream of pulls over both replicas while faults come and go: no byte after an acknowledged removal, no upstream request after an acknowledged close, every pull verified, every failure bounded and named', async () => {
    const [a, b] = await pair(chaos.map((i) => `docker.io/${i.name}`));
    const removedImage = chaos[0] as MiniImage;
    const log: Array<{ image: MiniImage; startedMs: number; answer: Answer; verified: boolean; cut: boolean }> = [];
    let stop = false;

    /** One request, recorded: a 200 is read to the end and hashed, a cut stream counts as a cut. */
    const record = async (r: Replica, image: MiniImage, url: string, digest: string, headers: Record<string, string> = {}): Promise<boolean> => {
      const startedMs = Date.now();
      try {
        const answer = await ask(url, { headers });
        const verified = answer.status === 200 && sha256(answer.body) === digest;
        log.push({ image, startedMs, answer, verified, cut: false });
        return answer.status === 200;
      } catch (e) {
        const ms = Date.now() - startedMs;
        log.push({ image, startedMs, answer: { status: 0, body: Buffer.alloc(0), ms, message: String(e) }, verified: false, cut: true });
        return false;
      }
    };
    const worker = async (n: number): Promise<void> => {
      for (let k = n; !stop; k++) {
        const r = k % 2 === 0 ? a : b;
        const image = chaos[k % chaos.length] as MiniImage;
        if (!(await record(r, image, manifestUrl(r, image), image.digest, ACCEPT))) continue;
        for (const blob of [image.config, ...image.layers]) await record(r, image, blobUrl(r, image, blob.digest), blob.digest);
      }
    };
    const workers = [0, 1, 2].map((n) => worker(n));

    const faults: Array<[Replica, 'pg' | 's3', (p: FaultProxy) => void]> = [
      [a, 'pg', (p) => p.freeze()], [b, 's3', (p) => p.freeze()], [b, 'pg', (p) => p.refuse()],
      [a, 's3', (p) => p.slow(300)], [b, 'pg', (p) => p.freeze()], [a, 's3', (p) => p.refuse()], [a, 'pg', (p) => p.slow(200)],
    ];
    const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
    /** An edit through `r` retried (faults healed) until every live replica acknowledged it; when that was. */
    const acknowledged = async (r: Replica, method: 'DELETE', url: string, payload?: unknown): Promise<number> => {
      for (;;) {
        const got = await admin(r, method, url, payload);
        if (got.status === 200) return Date.now();
        expect(got.status).toBe(503);
        expect(got.message).toMatch(/PostgreSQL at|did not acknowledge/);
      }
    };
    let removedAt = Infinity;
    let closedAt = Infinity;
    let upstreamAtClose = 0;
    for (const [step, [r, engine, apply]] of faults.entries()) {
      apply(r[engine]);
      await pause(1500);
      r[engine].restore();
      await pause(500);
      if (step === 2) removedAt = await acknowledged(a, 'DELETE', '/api/v1/allowlist', { rules: [`docker.io/${removedImage.name}`] });
      if (step === 4) {
        closedAt = await acknowledged(b, 'DELETE', '/api/v1/window');
        upstreamAtClose = upstreamRequests();
      }
    }
    stop = true;
    await Promise.all(workers);

    const tally = new Map<string, number>();
    for (const l of log) tally.set(String(l.answer.status), (tally.get(String(l.answer.status)) ?? 0) + 1);
    console.log('STATS', JSON.stringify(Object.fromEntries(tally)), 'max failure ms', Math.max(0, ...log.filter((l) => l.answer.status !== 200).map((l) => l.answer.ms)));
    expect(log.filter((l) => l.answer.status === 200).length).toBeGreaterThan(10);
    // Every completed pull verified byte for byte.
    expect(log.filter((l) => l.answer.status === 200 && !l.verified)).toEqual([]);
    // No byte for the removed rule once its removal was acknowledged.
    expect(log.filter((l) => l.image === removedImage && l.startedMs > removedAt && l.answer.status === 200)).toEqual([]);
    // No upstream request after the close was acknowledged.
    expect(upstreamRequests()).toBe(upstreamAtClose);
    // Every failure answered (or cut) within its bound, and a 503 names the engine at fault.
    const failures = log.filter((l) => l.answer.status !== 200);
    expect(failures.filter((l) => l.answer.ms > ANSWER_BOUND_MS).map((l) => `${l.answer.status} ${l.answer.ms} ms ${l.answer.message}`)).toEqual([]);
    for (const l of failures.filter((f) => f.answer.status === 503)) expect(l.answer.message).toMatch(/PostgreSQL at 127\.0\.0\.1:\d+|object store at http:\/\/127\.0\.0\.1:\d+/);
    expect(failures.map((l) => l.answer.status).filter((st) => ![0, 403, 404, 503].includes(st))).toEqual([]);
    expect(closedAt).toBeLessThan(Infinity);
  }, 120_000);
});
