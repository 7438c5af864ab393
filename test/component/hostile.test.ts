// Over a thousand malformed requests on raw sockets against an in-process sluice holding real content:
// traversal in names and digests, encoded dots and NULs, huge names, bad Range, unknown algorithms,
// hostile `ns`, odd methods and header abuse. Only 4xx (or 2xx/304 for harmless ones), never 5xx,
// never a hang, the server healthy afterwards, and no file written outside the store's tmp/.
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { importPath } from '../../src/jobs/importer.js';
import { tempDir } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { snapshot, type Snapshot } from '../helpers/snapshot.js';
import { spoolDir } from '../helpers/fs-store.js';

const REQUEST_TIMEOUT_MS = 10_000;
const CONCURRENCY = 32;
const HEX = 'c'.repeat(64);
const D = `sha256:${HEX}`;

let work: string;
let layout: LayoutDescription;
let sluice: InProcessSluice;
let port: number;
/** A blob and a manifest that exist and are allowed, so ranges and conditionals reach the real code. */
let blob: { digest: string; size: number };
let manifest: string;

interface Outcome {
  /** HTTP status, or 'closed' (connection ended with no response), 'reset', 'timeout'. */
  status: number | 'closed' | 'reset' | 'timeout';
  head: string;
}

interface Case {
  label: string;
  raw: string | Buffer;
  /** Statuses this case may answer besides any 4xx. */
  ok?: ReadonlyArray<number | 'closed' | 'reset'>;
}

/** One request on its own connection; resolves with the status line's code, however the peer behaves. */
function send(raw: string | Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (o: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(o);
    };
    const parsed = (fallback: Outcome['status']): Outcome => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      return { status: m ? Number(m[1]) : fallback, head: text.slice(0, 300) };
    };
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => finish({ status: 'timeout', head: Buffer.concat(chunks).toString('latin1').slice(0, 300) }), REQUEST_TIMEOUT_MS);
    socket.on('data', (b: Buffer) => {
      chunks.push(b);
      // A full status line is all we need; with Connection: close the server ends the socket anyway.
      if (/^HTTP\/1\.[01] \d{3}[^\n]*\n/.test(Buffer.concat(chunks).toString('latin1'))) finish(parsed('closed'));
    });
    socket.on('end', () => finish(parsed('closed')));
    socket.on('close', () => finish(parsed('closed')));
    socket.on('error', (e: NodeJS.ErrnoException) => finish(parsed(e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'reset' : 'closed')));
    socket.write(raw);
  });
}

const req = (method: string, target: string, headers: string[] = [], body = ''): string =>
  `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n${body}`;

/** Deterministic PRNG (mulberry32), so a failure names a request that can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function cases(): Case[] {
  const out: Case[] = [];
  const add = (label: string, raw: string | Buffer, ok?: Case['ok']): void => void out.push({ label, raw, ok });
  const harmless = [200, 206, 304] as const;

  // 1. Traversal and encoding tricks in names, in every route kind and host form.
  const fragments = [
    '..', '%2e%2e', '%2E%2E', '.%2e', '%2e.', '..%2f..', '%2e%2e%2f%2e%2e', '..%5c..', '%252e%252e', '..;', '...', '.',
    '%00', 'a%00b', '%2f', 'a/../../b', '../../../../etc/passwd', '..\\..\\', '%c0%ae%c0%ae', '%e2%80%a5', '~root', '$HOME',
    '%0d%0aX-Injected:%201', 'a%20b', '%ff', '%zz', '%', 'con', 'a:b', '@', 'a?b', 'A', '_a', 'a--', '-',
  ];
  const kinds = ['manifests/latest', `manifests/${D}`, `blobs/${D}`, 'tags/list', `referrers/${D}`];
  const namings = (f: string): string[] => [f, `library/${f}`, `${f}/x`, `registry.k8s.io/${f}`, `ghcr.io/${f}/etc`];
  for (const f of fragments) {
    for (const name of namings(f)) {
      for (const kind of kinds) add(`name ${name} ${kind}`, req('GET', `/v2/${name}/${kind}`), harmless);
    }
  }

  // 2. Traversal, bad shapes and unknown algorithms in digests.
  const digests = [
    'sha256:..', 'sha256:../../../etc/passwd', `sha256:${HEX}%2f..%2f..`, `sha256:%2e%2e%2f${HEX}`, `..%2f${HEX}`, `sha256:${HEX}%00`,
    `sha256:${HEX.toUpperCase()}`, `sha256:${HEX.slice(1)}`, `sha256:${HEX}0`, 'sha256:totallywrong', 'sha256:', ':', `:${HEX}`,
    `sha256::${HEX}`, `SHA256:${HEX}`, `sha512:${'d'.repeat(128)}`, `sha384:${'d'.repeat(96)}`, `md5:${'d'.repeat(32)}`,
    `blake3:${HEX}`, `sha256+b64u:${HEX}`, 'sha256:%00', `sha256%3A${HEX}`, `sha256:${HEX}?`, `sha256:${HEX}#x`, `sha256:${'g'.repeat(64)}`,
    `sha256:${HEX};x`, `sha256:${'../'.repeat(30)}`,
  ];
  for (const d of digests) {
    for (const kind of ['blobs', 'manifests', 'referrers']) {
      for (const name of ['registry.k8s.io/pause', 'library/busybox', '..']) add(`digest ${name} ${kind} ${d}`, req('GET', `/v2/${name}/${kind}/${d}`), harmless);
    }
  }

  // 3. Huge names, tags, digests, ns and queries (64 KiB) — past the header limit and just under it.
  for (const n of [300, 4096, 15 * 1024, 64 * 1024]) {
    const big = 'a'.repeat(n);
    add(`huge name ${n}`, req('GET', `/v2/${big}/manifests/latest`));
    add(`huge nested name ${n}`, req('GET', `/v2/${'a/'.repeat(n / 2)}b/manifests/latest`));
    add(`huge tag ${n}`, req('GET', `/v2/registry.k8s.io/pause/manifests/${big}`));
    add(`huge digest ${n}`, req('GET', `/v2/registry.k8s.io/pause/blobs/sha256:${big}`));
    add(`huge ns ${n}`, req('GET', `/v2/pause/manifests/3.10?ns=${big}`));
    add(`huge query ${n}`, req('GET', `/v2/registry.k8s.io/pause/tags/list?last=${big}`), harmless);
    add(`huge dots ${n}`, req('GET', `/v2/${'%2e%2e/'.repeat(n / 7)}manifests/latest`));
  }

  // 4. Range headers on a real blob (and on a manifest, where Range is ignored).
  const ranges = [
    'bytes=', 'bytes=-', 'bytes=a-b', 'bytes=99999999999999999999-', 'bytes=-99999999999999999999', `bytes=${'0-0,'.repeat(2000)}0-0`,
    'bytes=5-1', 'bytes=--1', 'bytes=0--1', 'bytes=1e3-', 'bytes=0x10-', 'bytes=-0', 'bytes=0-', 'bytes=0-0', 'bytes=-1',
    'bytes=1-2, 3-4', 'bytes = 0 - 1', 'BYTES=0-1', 'bits=0-1', 'bytes=0-1;x', 'bytes=\t0-1', '=', ';', ',', 'bytes=1.5-2',
    'bytes=-9007199254740993', 'bytes=9007199254740993-', 'bytes=0-9007199254740993', 'bytes=00000000000000000001-2', 'bytes=0-1\u00ff',
  ];
  for (const r of ranges) {
    add(`range ${r.slice(0, 40)} blob`, req('GET', '/v2/registry.k8s.io/pause/blobs/BLOB', [`Range: ${r}`]), harmless);
    add(`range ${r.slice(0, 40)} blob HEAD`, req('HEAD', '/v2/registry.k8s.io/pause/blobs/BLOB', [`Range: ${r}`]), harmless);
    add(`range ${r.slice(0, 40)} manifest`, req('GET', '/v2/registry.k8s.io/pause/manifests/3.10', [`Range: ${r}`]), harmless);
  }
  add('range beyond the end', req('GET', '/v2/registry.k8s.io/pause/blobs/BLOB', ['Range: bytes=SIZE-']));
  add('two Range headers', req('GET', '/v2/registry.k8s.io/pause/blobs/BLOB', ['Range: bytes=0-1', 'Range: bytes=2-3']), harmless);
  add('If-None-Match junk', req('GET', '/v2/registry.k8s.io/pause/blobs/BLOB', [`If-None-Match: ${'"x",'.repeat(1000)}*`]), harmless);
  add('If-None-Match + bad range', req('GET', '/v2/registry.k8s.io/pause/blobs/BLOB', ['If-None-Match: *', 'Range: bytes=SIZE-']), harmless);

  // 5. ns values that must never be dialled or resolve to a path.
  const nsValues = [
    '127.0.0.1:22', '127.0.0.1%3A22', '../../etc', '..%2f..%2fetc', '%2e%2e', 'localhost', '169.254.169.254', '[::1]', '%5B%3A%3A1%5D',
    'docker.io:443', 'docker.io/..', 'docker.io%2f..', 'http://evil.example', 'evil.example#', '%00', 'docker.io%00', '', ' ', 'a'.repeat(300),
    'unix:/var/run/docker.sock', '@evil.example', 'docker.io@evil.example', 'ghcr.io.', '.ghcr.io', 'GHCR.IO', 'ghcr.io%20', 'xn--ghcr-9ta.io',
    'ghcr.io\\..', '0x7f000001', '2130706433', 'docker.io&ns=evil.example', 'ghcr.io:', 'ghcr.io:99999',
  ];
  for (const ns of nsValues) {
    for (const path of ['/v2/pause/manifests/3.10', `/v2/pause/blobs/${D}`, '/v2/pause/tags/list', `/v2/pause/referrers/${D}`, '/v2/../../etc/manifests/x']) {
      add(`ns=${ns.slice(0, 30)} ${path}`, req('GET', `${path}?ns=${ns}`), harmless);
    }
  }
  add('ns twice', req('GET', '/v2/pause/manifests/3.10?ns=evil.example&ns=registry.k8s.io'));
  add('ns[]', req('GET', '/v2/pause/manifests/3.10?ns[]=registry.k8s.io'), harmless);

  // 6. Odd methods, on the API, the root and a blob.
  const methods = ['PROPFIND', 'PROPPATCH', 'TRACE', 'OPTIONS', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'SEARCH', 'PURGE', 'LINK', 'UNLINK',
    'REPORT', 'MKACTIVITY', 'CHECKOUT', 'MERGE', 'M-SEARCH', 'NOTIFY', 'SUBSCRIBE', 'UNSUBSCRIBE', 'ACL', 'BIND', 'REBIND', 'SOURCE', 'QUERY',
    'FOO', 'get', 'GETT', 'G ET', 'PUT', 'POST', 'PATCH', 'DELETE'];
  for (const m of methods) {
    for (const path of ['/v2/', '/', '/v2/registry.k8s.io/pause/blobs/BLOB', '/v2/registry.k8s.io/pause/manifests/3.10']) add(`method ${m} ${path}`, req(m, path));
  }
  for (const target of ['127.0.0.1:22', '127.0.0.1:9', 'docker.io:443', '/v2/']) {
    // CONNECT is for proxies: refusing it by closing the connection is as good as a 4xx.
    add(`CONNECT ${target}`, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`, ['closed', 'reset']);
  }

  // 7. Header and request-line abuse.
  const blobTarget = '/v2/registry.k8s.io/pause/blobs/BLOB';
  add('header over 16 KiB', req('GET', '/v2/', [`X-Big: ${'a'.repeat(20 * 1024)}`]), ['reset']);
  add('2500 headers', req('GET', '/v2/', Array.from({ length: 2500 }, (_, i) => `X-H${i}: v`)), [200, 'reset']);
  add('bad Content-Length', req('GET', '/v2/', ['Content-Length: abc']));
  add('negative Content-Length', req('GET', '/v2/', ['Content-Length: -1']));
  add('two Content-Lengths', req('GET', '/v2/', ['Content-Length: 1', 'Content-Length: 2'], 'ab'));
  add('CL and TE', req('GET', '/v2/', ['Content-Length: 3', 'Transfer-Encoding: chunked'], '0\r\n\r\n'));
  add('bad chunked body', req('GET', '/v2/', ['Transfer-Encoding: chunked'], 'zz\r\nxx\r\n'));
  add('TE gzip', req('GET', '/v2/', ['Transfer-Encoding: gzip'], ''));
  add('GET with body', req('GET', blobTarget, ['Content-Length: 5', 'Content-Type: application/json'], '{"a":'), harmless);
  add('no Host', `GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n`, [200]);
  add('two Hosts', req('GET', '/v2/', ['Host: evil.example']), [200]);
  add('Host with path', `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1/../../etc\r\nConnection: close\r\n\r\n`, [200]);
  add('NUL in header value', Buffer.from(`GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\u0000b\r\nConnection: close\r\n\r\n`, 'latin1'));
  add('CR in header value', `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\rb\r\nConnection: close\r\n\r\n`);
  add('LF-only line endings', `GET /v2/ HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n`, [200]);
  add('space before colon', req('GET', '/v2/', ['X-A : b']));
  add('header without colon', req('GET', '/v2/', ['garbage']));
  add('obs-fold', req('GET', '/v2/', ['X-A: a', ' folded']));
  add('Expect 100-continue', req('GET', '/v2/', ['Expect: 100-continue']), [100, 200]);
  add('Expect junk', req('GET', '/v2/', ['Expect: teapot']));
  add('Accept junk', req('GET', '/v2/registry.k8s.io/pause/manifests/3.10', [`Accept: ${'x/y;q=0.1, '.repeat(500)}`]), harmless);
  add('absolute-form', req('GET', `http://127.0.0.1:${0}/v2/`), harmless);
  add('absolute-form other host', req('GET', 'http://169.254.169.254/latest/meta-data/'));
  add('asterisk-form', req('GET', '*'));
  add('OPTIONS *', req('OPTIONS', '*'));
  add('empty target', 'GET  HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  add('relative target', req('GET', 'v2/'));
  add('backslashes', req('GET', '\\v2\\..\\..\\etc\\passwd'));
  add('double slash', req('GET', '//v2/registry.k8s.io/pause/manifests/3.10'));
  add('encoded slash v2', req('GET', '/v2%2fregistry.k8s.io%2fpause%2fmanifests%2f3.10'));
  add('fragment', req('GET', '/v2/registry.k8s.io/pause/manifests/3.10#x'), harmless);
  add('HTTP/1.0', 'GET /v2/ HTTP/1.0\r\n\r\n', [200]);
  add('HTTP/2.0 line', 'GET /v2/ HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n', [200, 'closed', 'reset']);
  add('HTTP/9.9', 'GET /v2/ HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n', ['closed', 'reset']);
  add('HTTP/0.9', 'GET /v2/\r\n\r\n', [200, 'closed', 'reset']);
  add('h2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', ['closed', 'reset']);
  add('TLS hello', Buffer.from('16030100a5010000a10303', 'hex'), ['closed', 'reset']);
  add('binary junk', Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 37) % 256)), ['closed', 'reset']);
  add('utf-8 in path', Buffer.from('GET /v2/ünïcödé/manifests/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n', 'utf8'), ['closed', 'reset']);
  add('pipelined', `GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\nGET /v2/../../etc HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`, [200]);
  add('query abuse', req('GET', '/v2/registry.k8s.io/pause/tags/list?n=99999999999&last=%ff&n=1'));
  add('query n=-1', req('GET', '/v2/registry.k8s.io/pause/tags/list?n=-1'));
  add('query bad percent', req('GET', '/v2/registry.k8s.io/pause/tags/list?last=%zz%'), harmless);
  add('artifactType NUL', req('GET', `/v2/registry.k8s.io/pause/referrers/${D}?artifactType=%00`), harmless);

  // 8. Seeded random paths from a hostile alphabet, for whatever the lists above missed.
  const rand = prng(0x5eed);
  const alphabet = ['a', 'z', '0', '.', '..', '-', '_', '/', '%2e', '%2f', '%00', '%25', '%', ':', '@', ';', '~', '\\', 'sha256:', HEX, 'manifests', 'blobs', 'tags', 'list', 'referrers', 'library', 'ghcr.io', 'registry.k8s.io', '?ns=', '&', '#', '%ff'];
  for (let i = 0; i < 400; i++) {
    const n = 1 + Math.floor(rand() * 12);
    let path = '/v2/';
    for (let j = 0; j < n; j++) path += alphabet[Math.floor(rand() * alphabet.length)];
    const method = ['GET', 'HEAD'][Math.floor(rand() * 2)]!;
    add(`random ${i} ${method} ${path}`, req(method, path), harmless);
  }
  return out;
}


beforeAll(async () => {
  work = await tempDir('hostile');
  layout = await buildLayout(join(work, 'layout'));
  sluice = await startSluice({ allowlist: ['registry.k8s.io/pause:3.10', 'docker.io/library/busybox', 'ghcr.io/siderolabs/kubelet:v1.34.0'] });
  port = Number(new URL(sluice.url).port);
  const result = await importPath(sluice.app.store, layout.dir);
  expect(result.failed).toEqual([]);
  const pause = layout.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
  manifest = pause.digest;
  blob = pause.blobs[pause.blobs.length - 1]!;
  // A canary tree beside the store: nothing may appear, change or vanish here.
  await mkdir(join(sluice.dir, 'canary', 'etc'), { recursive: true });
  await writeFile(join(sluice.dir, 'canary', 'etc', 'passwd'), 'root:x:0:0\n');
  await writeFile(join(sluice.dir, 'canary', 'manifests'), 'x');
});

afterAll(async () => {
  await sluice?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('hostile input', () => {
  test('≥ 1,000 malformed requests: only 4xx (2xx/304 where harmless), no 5xx, no hang, nothing written outside the store', async () => {
    const all = cases().map((c) => ({
      ...c,
      raw: typeof c.raw === 'string' ? c.raw.replaceAll('BLOB', blob.digest).replaceAll('SIZE', String(blob.size)) : c.raw,
    }));
    expect(all.length).toBeGreaterThanOrEqual(1000);
    const beside = await snapshot(sluice.dir, (r) => r === 'data');
    const inStore = await snapshot(sluice.storage, (r) => r === 'tmp');

    const failures: string[] = [];
    const counts = new Map<string, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < all.length) {
        const c = all[next++]!;
        const o = await send(c.raw);
        const key = String(o.status);
        counts.set(key, (counts.get(key) ?? 0) + 1);
        const fine = (typeof o.status === 'number' && o.status >= 400 && o.status < 500) || (c.ok ?? []).includes(o.status as never);
        if (!fine) failures.push(`${c.label.slice(0, 160)} → ${o.status}\n    ${o.head.split('\r\n').slice(0, 1).join(' | ')}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    expect(failures, `${failures.length} bad answers; status counts ${JSON.stringify(Object.fromEntries(counts))}`).toEqual([]);
    expect([...counts.keys()].some((k) => k.startsWith('5'))).toBe(false);

    // Healthy: the API answers and serves exact content.
    const base = await fetch(`${sluice.url}/v2/`);
    expect(base.status).toBe(200);
    const r = await fetch(`${sluice.url}/v2/registry.k8s.io/pause/blobs/${blob.digest}`);
    expect(r.status).toBe(200);
    expect(`sha256:${createHash('sha256').update(Buffer.from(await r.arrayBuffer())).digest('hex')}`).toBe(blob.digest);
    const m = await fetch(`${sluice.url}/v2/registry.k8s.io/pause/manifests/3.10`, { method: 'HEAD' });
    expect(m.headers.get('docker-content-digest')).toBe(manifest);

    // Nothing beside the store changed; inside it, only tmp/ and the denied log may differ.
    expect(await snapshot(sluice.dir, (r) => r === 'data')).toEqual(beside);
    const after = await snapshot(sluice.storage, (r) => r === 'tmp');
    const volatile = (k: string): boolean => k.startsWith('denied.json');
    const strip = (s: Snapshot): string[] => [...s.files.entries()].filter(([k]) => !volatile(k)).map(([k, v]) => `${k} ${v}`).sort();
    expect(strip(after)).toEqual(strip(inStore));
    expect((await readdir(spoolDir(sluice.app.store))).length).toBe(0);
  });
});
