// `npm run bench [-- --quick]`: builds the content, starts every target on 127.0.0.1, runs the five cases of
// issue 5 in alternation and the boot storm (case 6, storm.ts), prints one table and writes every figure to
// bench/results/<timestamp>.json.
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, hostname, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_HOST, writeLayout, writeStaticTree, type BenchImage, type Layout } from './content.js';
import {
  runFanInCase,
  runMemoryCase,
  runRateCase,
  runStartupCase,
  runThroughputCase,
  settings,
  type Settings,
} from './cases.js';
import { KiB, MiB } from '../test/kit/oci.js';
import { killAllSync, run, runOk, stopAll } from '../test/kit/proc.js';
import { BARE_NOTE, backgroundLine, buildRows, clientCeilings, renderRows, summaryLine, type BenchResults } from './report.js';
import { REPO_ROOT, SLUICE_MAIN } from '../test/kit/sluice.js';
import { startBare, startCountingProxy, startNginx, startRegistry, startSluice, writeSluiceConfig, type Server } from './servers.js';
import { populateStore } from './store10k.js';
import { stormCase } from './storm.js';
import { renderScaleOut, runScaleOutCase, scaleOutServices, type ScaleOutRun } from './scale-out.js';

const REQUIRED = ['docker-registry', 'skopeo', 'nginx', 'wrk'];
const INSTALL_HINT = 'apt-get install docker-registry skopeo nginx wrk';

interface Options {
  quick: boolean;
  only: Set<number>;
  keep: boolean;
  cpuProf: boolean;
  rounds?: number;
  nodes?: number[];
  outDir: string;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      rounds: { type: 'string' },
      nodes: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench -- [--quick] [--only 1,2,3,4,5,6] [--rounds N] [--nodes 10,50,200] [--cpu-prof] [--keep] [--out DIR]\n' +
        '  --quick     about a minute: no 256 MiB blob, short runs, one round\n' +
        '  --only      run only these cases (1 rate, 2 throughput, 3 cold fan-in, 4 memory, 5 start-up, 6 boot storm,\n' +
        '              7 S3+PostgreSQL store vs fs: needs test/services/up.sh\'s SLUICE_TEST_* environment)\n' +
        '  --nodes     the boot storm\'s node counts (default 10,50,200)\n' +
        '  --cpu-prof  run every sluice of cases 1-4 under node --cpu-prof; profiles go next to the JSON\n' +
        '  --keep      keep the temp folder (content, stores, logs)\n',
    );
    process.exit(0);
  }
  const nodes = values.nodes?.split(',').map(Number);
  if (nodes?.some((n) => !Number.isInteger(n) || n < 1)) {
    process.stderr.write(`bench: --nodes wants positive whole numbers separated by commas, not ${values.nodes}\n`);
    process.exit(2);
  }
  const only = new Set((values.only ?? '1,2,3,4,5,6,7').split(',').map(Number).filter((n) => n >= 1 && n <= 7));
  return {
    quick: values.quick ?? false,
    only,
    keep: values.keep ?? false,
    cpuProf: values['cpu-prof'] ?? false,
    rounds: values.rounds === undefined ? undefined : Number(values.rounds),
    nodes,
    outDir: values.out ?? join(REPO_ROOT, 'bench', 'results'),
  };
}

const phase = (text: string): void => void process.stderr.write(`\n== ${text}\n`);

async function which(name: string): Promise<boolean> {
  return (await run('sh', ['-c', `command -v ${name}`])).code === 0;
}

async function toolVersions(): Promise<Record<string, string>> {
  const first = (t: string): string => t.trim().split('\n')[0]?.trim() ?? '';
  const v = async (cmd: string, args: string[]): Promise<string> => {
    const r = await run(cmd, args).catch(() => ({ stdout: '', stderr: 'not found', code: 1 }));
    return first(r.stdout || r.stderr);
  };
  const autocannon = JSON.parse(await readFile(join(REPO_ROOT, 'node_modules', 'autocannon', 'package.json'), 'utf8')) as { version: string };
  const commit = await v('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = (await run('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--', 'src'])).stdout.trim() !== '';
  return {
    sluice: `${commit}${dirty ? ' + uncommitted src changes' : ''}`,
    'docker-registry': await v('docker-registry', ['--version']),
    nginx: await v('nginx', ['-v']),
    wrk: await v('wrk', ['-v']),
    skopeo: await v('skopeo', ['--version']),
    autocannon: autocannon.version,
  };
}

interface Machine {
  hostname: string;
  cpus: number;
  cpuModel: string;
  memoryBytes: number;
  kernel: string;
  platform: string;
  arch: string;
  node: string;
  loadavg: number[];
}

function machine(): Machine {
  const c = cpus();
  return {
    hostname: hostname(),
    cpus: c.length,
    cpuModel: c[0]?.model ?? 'unknown',
    memoryBytes: totalmem(),
    kernel: release(),
    platform: process.platform,
    arch: process.arch,
    node: process.version,
    loadavg: loadavg(),
  };
}

async function pushToRegistry(layout: Layout, registry: Server): Promise<void> {
  const host = registry.url.replace('http://', '');
  await Promise.all(
    layout.images.map(async (img) => {
      await runOk('skopeo', ['copy', '--quiet', '--insecure-policy', '--preserve-digests', '--dest-tls-verify=false', `oci:${layout.dir}:${img.ref}`, `docker://${host}/${img.name}:${img.tag}`]);
      const r = await fetch(`${registry.url}/v2/${img.name}/manifests/${img.tag}`, { method: 'HEAD', headers: { accept: img.manifest.mediaType } });
      const served = r.headers.get('docker-content-digest');
      if (served !== img.manifest.digest) throw new Error(`docker-registry serves ${img.name}:${img.tag} as ${served}, expected ${img.manifest.digest}`);
    }),
  );
}

async function main(): Promise<number> {
  const opts = options(process.argv.slice(2));
  const s: Settings = { ...settings(opts.quick), ...(opts.rounds ? { rounds: opts.rounds, stormRounds: opts.rounds } : {}), ...(opts.nodes ? { stormNodes: opts.nodes } : {}) };
  const missing: string[] = [];
  for (const t of REQUIRED) if (!(await which(t))) missing.push(t);
  if (missing.length > 0) {
    process.stderr.write(`sluice bench: missing ${missing.join(', ')}; install with: ${INSTALL_HINT}\n`);
    return 2;
  }
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  await mkdir(opts.outDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'sluice-bench-'));
  // nginx's workers (nobody) read the static tree inside it.
  await chmod(work, 0o755);
  const profileDir = join(opts.outDir, `profiles-${stamp}`);
  const nodeArgs = opts.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const results: BenchResults = {};
  let scaleOut: ScaleOutRun[] | undefined;
  const loadAtStart = loadavg();
  if ((loadAtStart[0] ?? 0) > 0.5 * cpus().length) {
    process.stderr.write(`warning: load average ${loadAtStart.map((l) => l.toFixed(1)).join(' ')} on ${cpus().length} CPUs; other work on this machine will skew the figures (ratios less than absolutes)\n`);
  }
  const t0 = performance.now();
  process.stderr.write(`sluice bench (${opts.quick ? 'quick' : 'full'}), cases ${[...opts.only].join(',')}, work dir ${work}\n`);
  try {
    phase('content');
    const sizes = [1 * KiB, 1 * MiB, 64 * MiB, ...(opts.quick ? [] : [256 * MiB])];
    const layout = await writeLayout(join(work, 'layout'), [{ name: 'bench/img', tag: 'v1', sizes }]);
    const cold = await writeLayout(join(work, 'cold-layout'), [{ name: 'bench/cold', tag: 'v1', sizes: [64 * MiB] }]);
    const img = layout.images[0] as BenchImage;
    const coldImg = cold.images[0] as BenchImage;
    const staticRoot = join(work, 'static');
    await writeStaticTree(staticRoot, layout);

    const needRegistry = opts.only.has(1) || opts.only.has(2) || opts.only.has(3);
    const registry = needRegistry ? await startRegistry(join(work, 'registry')) : undefined;
    const sluiceDir = join(work, 'sluice');
    const cached = await writeSluiceConfig(sluiceDir, { storage: join(sluiceDir, 'data'), upstreamUrl: 'http://127.0.0.1:9', windows: 'never', allowlist: [img.ref] });
    const tImport = performance.now();
    await Promise.all([
      registry ? pushToRegistry(layout, registry) : Promise.resolve(),
      registry && opts.only.has(3) ? pushToRegistry(cold, registry) : Promise.resolve(),
      runOk(process.execPath, [SLUICE_MAIN, 'import', layout.dir, '--config', cached.file]),
    ]);
    process.stderr.write(`content ready: ${sizes.map((n) => (n >= MiB ? `${n / MiB} MiB` : `${n / KiB} KiB`)).join(', ')} (+ 64 MiB cold); import and push took ${((performance.now() - tImport) / 1000).toFixed(1)} s\n`);

    if (opts.only.has(1) || opts.only.has(2)) {
      const sluice = await startSluice(cached.file, cached.port, { nodeArgs });
      const nginx = await startNginx(join(work, 'nginx'), staticRoot);
      const bareNode = await startBare('node', join(work, 'bare'), staticRoot);
      const bareFastify = await startBare('fastify', join(work, 'bare'), staticRoot);
      try {
        if (opts.only.has(1)) {
          phase(`case 1: request rate, autocannon ${s.rateConnections} connections, ${s.rateDurationS} s × ${s.rounds} round(s)`);
          results.rate = await runRateCase(s, { sluice, registry, nginx, bare: bareFastify }, img);
        }
        if (opts.only.has(2)) {
          phase(`case 2: blob throughput, wrk, ${s.throughputDurationS} s × ${s.rounds} round(s)`);
          // The same store served by a second sluice with the buffered sender: sendfile's gain, in the same run.
          const buffersDir = join(work, 'sluice-buffers');
          const cfg = await writeSluiceConfig(buffersDir, { storage: join(sluiceDir, 'data'), upstreamUrl: 'http://127.0.0.1:9', windows: 'never', allowlist: [img.ref] });
          const buffers = await startSluice(cfg.file, cfg.port, { nodeArgs, name: 'sluice-buffers', env: { ...process.env, SLUICE_SENDFILE: 'off' } });
          try {
            results.throughput = await runThroughputCase(s, { sluice, buffers, registry, nginx, bare: bareNode }, img, work);
          } finally {
            await buffers.stop();
          }
        }
      } finally {
        await Promise.all([sluice.stop(), nginx.stop(), bareNode.stop(), bareFastify.stop()]);
      }
    }
    if (opts.only.has(4)) {
      phase(`case 4: peak RSS, ${s.memoryClients} concurrent GETs of the ${s.memoryBlobBytes / MiB} MiB blob`);
      results.memory = await runMemoryCase(s, { configFile: cached.file, port: cached.port, img, nodeArgs });
    }
    if (opts.only.has(3) && registry) {
      phase(`case 3: cold fan-in, ${s.fanInClients} GETs of an uncached 64 MiB blob, ${s.fanInRepeats} repeat(s)`);
      const proxy = await startCountingProxy(work, registry.url.replace('http://', ''));
      try {
        results.fanIn = await runFanInCase(s, { registry, proxy, cold: coldImg, workDir: work, nodeArgs });
      } finally {
        await proxy.stop();
      }
    }
    await registry?.stop();
    if (opts.only.has(7)) {
      if (scaleOutServices()) {
        phase('case 7: the S3 (Ceph RGW) + PostgreSQL store vs the filesystem store, same content');
        scaleOut = await runScaleOutCase(s, { fsConfig: cached, layoutDir: layout.dir, img, workDir: work });
      } else {
        process.stderr.write('\n== case 7 skipped: no SLUICE_TEST_S3_ENDPOINT / SLUICE_TEST_PG_URL (eval "$(test/services/up.sh DIR)" first)\n');
      }
    }
    if (opts.only.has(5) || opts.only.has(4)) {
      phase('case 4/5: idle RSS and start-up with 10,000 blobs in the store, and with an empty store');
      const manyDir = join(work, 'many');
      const populated = await populateStore(join(manyDir, 'data'));
      process.stderr.write(`  store: ${populated.blobs} blobs, ${populated.images} tagged images in ${populated.repositories} repositories, built in ${(populated.buildMs / 1000).toFixed(1)} s\n`);
      const cfg = await writeSluiceConfig(manyDir, { storage: join(manyDir, 'data'), upstreamUrl: 'http://127.0.0.1:9', windows: 'never', allowlist: [populated.rule] });
      const emptyDir = join(work, 'empty');
      const empty = await writeSluiceConfig(emptyDir, { storage: join(emptyDir, 'data'), upstreamUrl: 'http://127.0.0.1:9', windows: 'never', allowlist: [populated.rule] });
      results.startup = await runStartupCase(s, { configFile: cfg.file, port: cfg.port, sample: populated.sample, emptyConfigFile: empty.file, emptyPort: empty.port });
      results.idleStoreBlobs = populated.blobs;
    }
    if (opts.only.has(6)) {
      phase(`case 6: boot storm, ${s.stormNodes.join(' and ')} nodes, cold then warm, sluice and distribution's proxy mode, ${s.stormRounds} round(s)`);
      const storm = await stormCase(s, join(work, 'storm'), nodeArgs);
      results.storm = storm.runs;
      results.stormImages = storm.images;
    }
  } finally {
    await stopAll();
    if (!opts.keep) await rm(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }

  const rows = buildRows(results);
  const table = results.storm ? renderRows(rows, `${BARE_NOTE}; in case 6, docker-registry = distribution in proxy mode (proxy.remoteurl)`) : renderRows(rows);
  const summary = summaryLine(rows);
  const finishedAt = new Date();
  const file = join(opts.outDir, `${stamp}.json`);
  const doc = {
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationS: (performance.now() - t0) / 1000,
    mode: opts.quick ? 'quick' : 'full',
    machine: { ...machine(), loadavgAtStart: loadAtStart },
    versions: await toolVersions(),
    settings: s,
    upstreamHost: BENCH_HOST,
    rows,
    clientCeilings: clientCeilings(results.throughput ?? []),
    summary,
    raw: { ...results, ...(scaleOut ? { scaleOut } : {}) },
    profiles: opts.cpuProf ? profileDir : undefined,
  };
  await writeFile(file, `${JSON.stringify(doc, null, 2)}\n`);
  const m = doc.machine;
  process.stdout.write(
    `\nsluice bench, ${doc.mode} run, ${finishedAt.toISOString()} — ${m.cpus} × ${m.cpuModel}, ${(m.memoryBytes / 1024 ** 3).toFixed(0)} GiB, Linux ${m.kernel}, Node ${process.version}\n\n` +
      `${table}\n\n${scaleOut ? `${renderScaleOut(scaleOut)}\n\n` : ''}${summary}\n${backgroundLine(results)}\nresults: ${file}${opts.cpuProf ? `\nprofiles: ${profileDir}` : ''}\n(took ${doc.durationS.toFixed(0)} s)\n`,
  );
  return 0;
}

process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\n${sig}: stopping the bench's processes\n`);
    void stopAll().finally(() => process.exit(130));
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (e: unknown) => {
    process.stderr.write(`sluice bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await stopAll();
    process.exitCode = 1;
  },
);
