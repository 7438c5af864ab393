// Case 7: the same sluice on the scale-out store (blobs on S3 / Ceph RGW, metadata in PostgreSQL) beside the
// filesystem store, same content, same run, alternating: manifest and small-blob request rate, blob throughput.
// The s3+pg store is measured twice: a replica with no local cache (every blob GET goes to the object store: a cold
// cache) and a second replica on the same bucket and database with `storage.cache`, warmed before it is measured.
// A third replica has `storage.s3.redirect`: its blob GETs are 307s to the object store. wrk does not follow
// redirects, so blob throughput is measured a second time for every store with one client that does, `curl -L`
// (C transfers in parallel, one process, connections reused): for the redirect replica that is two requests per
// blob, the 307 from sluice and the GET from RGW; beside it, sluice's own CPU-seconds per GB delivered.
// Needs the services of test/services/up.sh (SLUICE_TEST_S3_* and SLUICE_TEST_PG_URL); skipped, and said, without.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { s3Client } from '../src/store/s3/client.js';
import { freePort, run, runOk } from '../test/kit/proc.js';
import { SLUICE_MAIN } from '../test/kit/sluice.js';
import { median, rateRequests, rotate, type Settings } from './cases.js';
import { sizeLabel, type BenchImage } from './content.js';
import { blobThroughput, requestRate } from './load.js';
import { treeCpuSeconds } from './proc.js';
import { fmtInt, fmtRatio, renderTable } from './report.js';
import { startSluice, type Server } from './servers.js';

export interface ScaleOutRun {
  backend: 'fs' | 's3+pg' | 's3+pg+cache' | 's3+pg+redirect';
  metric: string;
  round: number;
  /** req/s for the rate metrics, bytes/s for throughput. */
  value: number;
  errors: number;
}

/** Undefined (and why on stderr) when the services are not there. */
export function scaleOutServices(): { endpoint: string; access: string; secret: string; pgUrl: string } | undefined {
  const e = process.env;
  if (!e.SLUICE_TEST_S3_ENDPOINT || !e.SLUICE_TEST_PG_URL) return undefined;
  return { endpoint: e.SLUICE_TEST_S3_ENDPOINT, access: e.SLUICE_TEST_S3_ACCESS_KEY ?? '', secret: e.SLUICE_TEST_S3_SECRET_KEY ?? '', pgUrl: e.SLUICE_TEST_PG_URL };
}

/** A copy of the filesystem bench config with blobs on a fresh bucket and metadata in a fresh database; the layout imported into it. */
async function scaleOutConfig(fsConfigFile: string, dir: string, layoutDir: string): Promise<{ file: string; port: number; cached: { file: string; port: number }; redirect: { file: string; port: number } }> {
  const svc = scaleOutServices();
  if (!svc) throw new Error('no scale-out services');
  const id = randomBytes(4).toString('hex');
  const bucket = `sluice-bench-${id}`;
  const s3 = { endpoint: svc.endpoint, bucket, region: 'us-east-1', prefix: '', forcePathStyle: true, accessKeyEnv: 'SLUICE_TEST_S3_ACCESS_KEY', secretKeyEnv: 'SLUICE_TEST_S3_SECRET_KEY' };
  const client = s3Client(s3);
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  client.destroy();
  const admin = new pg.Client({ connectionString: svc.pgUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE sluice_bench_${id}`);
  await admin.end();
  const url = new URL(svc.pgUrl);
  url.pathname = `/sluice_bench_${id}`;
  const doc = parseYaml(await readFile(fsConfigFile, 'utf8')) as Record<string, unknown>;
  const port = await freePort();
  await mkdir(dir, { recursive: true });
  const file = join(dir, 'sluice.yaml');
  await writeFile(file, toYaml({
    ...doc,
    listen: `127.0.0.1:${port}`,
    storage: { s3, path: join(dir, 'local') },
    database: { postgres: { url: url.toString() } },
    admin: { listen: `127.0.0.1:${await freePort()}` },
  }));
  await runOk(process.execPath, [SLUICE_MAIN, 'import', layoutDir, '--config', file]);
  // A second replica on the same bucket and database, with a local blob cache large enough for the whole image.
  const cachedPort = await freePort();
  const cachedFile = join(dir, 'sluice-cache.yaml');
  await writeFile(cachedFile, toYaml({
    ...doc,
    listen: `127.0.0.1:${cachedPort}`,
    storage: { s3, path: join(dir, 'local-cache'), cache: { path: join(dir, 'blob-cache'), maxBytes: '4GiB' } },
    database: { postgres: { url: url.toString() } },
    admin: { listen: `127.0.0.1:${await freePort()}` },
  }));
  // A third, whose blob GETs are redirected to presigned URLs of the bucket.
  const redirectPort = await freePort();
  const redirectFile = join(dir, 'sluice-redirect.yaml');
  await writeFile(redirectFile, toYaml({
    ...doc,
    listen: `127.0.0.1:${redirectPort}`,
    storage: { s3: { ...s3, redirect: { ttl: '5m' } }, path: join(dir, 'local-redirect') },
    database: { postgres: { url: url.toString() } },
    admin: { listen: `127.0.0.1:${await freePort()}` },
  }));
  return { file, port, cached: { file: cachedFile, port: cachedPort }, redirect: { file: redirectFile, port: redirectPort } };
}

export async function runScaleOutCase(s: Settings, o: { fsConfig: { file: string; port: number }; layoutDir: string; img: BenchImage; workDir: string }): Promise<ScaleOutRun[]> {
  const s3cfg = await scaleOutConfig(o.fsConfig.file, join(o.workDir, 'scale-out'), o.layoutDir);
  const targets: Record<ScaleOutRun['backend'], Server> = {
    fs: await startSluice(o.fsConfig.file, o.fsConfig.port, { name: 'sluice-fs' }),
    's3+pg': await startSluice(s3cfg.file, s3cfg.port, { name: 'sluice-s3' }),
    's3+pg+cache': await startSluice(s3cfg.cached.file, s3cfg.cached.port, { name: 'sluice-s3-cache' }),
    's3+pg+redirect': await startSluice(s3cfg.redirect.file, s3cfg.redirect.port, { name: 'sluice-s3-redirect' }),
  };
  const runs: ScaleOutRun[] = [];
  const all = Object.keys(targets) as Array<ScaleOutRun['backend']>;
  // wrk takes a 307 for an answer: the redirect replica is measured only by the client that follows it.
  const order = all.filter((k) => k !== 's3+pg+redirect');
  const scriptFile = join(o.workDir, 'wrk-done-6.lua');
  try {
    // Warms the cached replica: one whole GET of each measured blob fills its cache.
    for (const size of s.throughputSizes) {
      const d = o.img.layers.get(sizeLabel(size));
      if (!d) continue;
      const res = await fetch(`${targets['s3+pg+cache'].url}/v2/${o.img.name}/blobs/${d.digest}`);
      if (!res.ok) throw new Error(`warming the cache: GET ${d.digest} answered ${res.status}`);
      await res.arrayBuffer();
    }
    for (const k of order) for (const q of rateRequests(o.img)) await requestRate(`${targets[k].url}${q.path}`, { connections: s.rateConnections, durationS: s.rateWarmupS, headers: q.headers });
    for (let round = 0; round < s.rounds; round++) {
      for (const q of rateRequests(o.img)) {
        for (const k of rotate(order, round)) {
          const r = await requestRate(`${targets[k].url}${q.path}`, { connections: s.rateConnections, durationS: s.rateDurationS, headers: q.headers });
          runs.push({ backend: k, metric: `${q.kind} (req/s)`, round, value: r.rps, errors: r.non2xx + r.errors });
          process.stderr.write(`  [7] ${q.kind.padEnd(18)} ${k.padEnd(11)} ${Math.round(r.rps).toString().padStart(6)} req/s\n`);
        }
      }
      for (const size of s.throughputSizes) {
        const d = o.img.layers.get(sizeLabel(size));
        if (!d) continue;
        for (const clients of s.throughputClients) {
          for (const k of rotate(order, round)) {
            const r = await blobThroughput(`${targets[k].url}/v2/${o.img.name}/blobs/${d.digest}`, { connections: clients, durationS: s.throughputDurationS, scriptFile });
            runs.push({ backend: k, metric: `blob ${sizeLabel(size)} ×${clients} (MB/s)`, round, value: r.bytesPerSec / 1e6, errors: r.errors });
            process.stderr.write(`  [7] ${sizeLabel(size).padStart(6)} ×${String(clients).padEnd(2)} ${k.padEnd(11)} ${(r.bytesPerSec / 1e6).toFixed(0).padStart(6)} MB/s\n`);
          }
          for (const k of rotate(all, round)) {
            const r = await followingThroughput(targets[k], `/v2/${o.img.name}/blobs/${d.digest}`, d.size, clients, s.throughputDurationS);
            const label = `blob ${sizeLabel(size)} ×${clients}, curl -L`;
            runs.push({ backend: k, metric: `${label} (MB/s)`, round, value: r.bytesPerSec / 1e6, errors: r.errors });
            runs.push({ backend: k, metric: `${label}: sluice CPU-s/GB`, round, value: r.serverCpuPerGB, errors: 0 });
            process.stderr.write(`  [7] ${sizeLabel(size).padStart(6)} ×${String(clients).padEnd(2)} ${k.padEnd(14)} ${(r.bytesPerSec / 1e6).toFixed(0).padStart(6)} MB/s curl -L, sluice ${r.serverCpuPerGB.toFixed(2)} CPU-s/GB\n`);
          }
        }
      }
    }
  } finally {
    await Promise.all(Object.values(targets).map((t) => t.stop()));
  }
  return runs;
}

/**
 * `curl -L` fetching one blob `clients` at a time for about `durationS` (at least 2 per client), connections reused:
 * bytes delivered per wall second, and the CPU the sluice process spent per GB of them. A transfer that did not end
 * in 200 with the blob's size is an error.
 */
async function followingThroughput(target: Server, path: string, sizeBytes: number, clients: number, durationS: number): Promise<{ bytesPerSec: number; serverCpuPerGB: number; errors: number }> {
  // Aimed at ~500 MB/s, what this box's RGW gives a few clients; the wall time measured is what counts.
  const transfers = Math.min(4000, Math.max(2 * clients, Math.ceil((durationS * 500e6) / Math.max(sizeBytes, 1))));
  const args = ['-sS', '-L', '--parallel', '--parallel-immediate', '--parallel-max', String(clients), '-w', '%{http_code} %{size_download}\n'];
  for (let i = 0; i < transfers; i++) args.push('-o', '/dev/null', `${target.url}${path}`);
  const cpu0 = await treeCpuSeconds(target.proc.pid);
  const t0 = performance.now();
  const r = await run('curl', args, { timeoutMs: 300_000 });
  const wallS = (performance.now() - t0) / 1000;
  const cpu = (await treeCpuSeconds(target.proc.pid)) - cpu0;
  const lines = r.stdout.trim().split('\n').filter(Boolean);
  const good = lines.filter((l) => l === `200 ${sizeBytes}`).length;
  const bytes = good * sizeBytes;
  return { bytesPerSec: bytes / wallS, serverCpuPerGB: bytes > 0 ? cpu / (bytes / 1e9) : 0, errors: transfers - good + (r.code === 0 ? 0 : 1) };
}

/** One line per metric: the medians side by side and s3+pg as a share of fs. */
export function renderScaleOut(runs: ScaleOutRun[]): string {
  const metrics = [...new Set(runs.map((r) => r.metric))];
  const med = (backend: string, metric: string): number => median(runs.filter((r) => r.backend === backend && r.metric === metric).map((r) => r.value));
  const body = metrics.map((m) => {
    const fs = med('fs', m);
    const s3 = med('s3+pg', m);
    const warm = med('s3+pg+cache', m);
    const redirected = runs.some((r) => r.metric === m && r.backend === 's3+pg+redirect') ? med('s3+pg+redirect', m) : undefined;
    const errors = runs.filter((r) => r.metric === m).reduce((n, r) => n + r.errors, 0);
    const cpu = m.endsWith('CPU-s/GB');
    const fmt = (v: number): string => (cpu ? v.toFixed(2) : fmtInt(v));
    const ratio = (v: number): string => (cpu ? '' : fmtRatio(v / fs));
    return [`7 scale-out`, m, fmt(fs), fmt(s3), ratio(s3), fmt(warm), ratio(warm),
      redirected === undefined ? '—' : fmt(redirected), redirected === undefined ? '' : ratio(redirected), errors > 0 ? `${errors} errors` : ''];
  });
  return renderTable(
    ['case', 'metric', 'fs store', 's3+pg (no cache: cold)', 'cold / fs', 's3+pg, cache warm', 'warm / fs', 's3+pg, redirect (followed)', 'redirect / fs', ''],
    body, [false, false, true, true, true, true, true, true, true, false],
  );
}
