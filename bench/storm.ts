// Case 6, the boot storm: N simulated nodes pull the Talos-like set at once through a mirror on a cold store,
// then again once cached, with sluice's pull-through and with distribution's proxy mode on the same
// upstream, a counting proxy in front of it. Targets alternate; every cold run gets a fresh store.
import { spawn } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ProxiedRequest } from './count-proxy.js';
import { backgroundCores, measure, memoryOf, pollRss, resetPeakRss, treeCpuSeconds } from './proc.js';
import { BENCH_DIST, startCountingProxy, startRegistry, startRegistryProxy, startSluice, writeSluiceConfig, type Server } from './servers.js';
import { BENCH_HOST } from './content.js';
import type { StormClientResult, StormPlan } from './storm-client.js';
import { NODE_PLATFORM, nodeClosure, pushStormImages, stormImageSet, writeStormImages, type StormImage } from './storm-content.js';
import { rotate, type Settings } from './cases.js';
import { summarisePhase, type StormPhase, type StormRun, type StormTarget } from './storm-report.js';

const log = (line: string): void => void process.stderr.write(`${line}\n`);

/** Splits nodes 0..n-1 round-robin over `procs` client processes. */
export function splitNodes(n: number, procs: number): number[][] {
  const out: number[][] = Array.from({ length: Math.max(1, Math.min(procs, n)) }, () => []);
  for (let i = 0; i < n; i++) out[i % out.length]?.push(i);
  return out;
}

/** One storm: the client processes start, report ready, get `go` together, and print their nodes' results. */
export async function runStormClients(plan: Omit<StormPlan, 'nodes'>, nodes: number, procs: number): Promise<StormClientResult[]> {
  const children = splitNodes(nodes, procs).map((mine) => {
    const child = spawn(process.execPath, [join(BENCH_DIST, 'storm-client.js'), JSON.stringify({ ...plan, nodes: mine })], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (t: string) => void (err += t));
    const lines = createInterface({ input: child.stdout });
    const ready = new Promise<void>((resolve, reject) => {
      lines.once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(`storm client said ${l}`))));
      child.once('error', reject);
    });
    const result = new Promise<StormClientResult>((resolve, reject) => {
      let last = '';
      lines.on('line', (l) => void (last = l));
      child.once('close', (code) => {
        if (code !== 0 || last === 'ready') reject(new Error(`storm client exited ${code}: ${err.slice(-2000)}`));
        else resolve(JSON.parse(last) as StormClientResult);
      });
    });
    return { child, ready, result };
  });
  await Promise.all(children.map((c) => c.ready));
  for (const c of children) c.child.stdin.end('go\n');
  return Promise.all(children.map((c) => c.result));
}

async function proxyLog(proxy: Server): Promise<ProxiedRequest[]> {
  const r = await fetch(`${proxy.url}/__bench/requests`);
  return (await r.json()) as ProxiedRequest[];
}

interface Ctx {
  s: Settings;
  images: StormImage[];
  proxy: Server;
  /** The upstream docker-registry: its CPU and the counting proxy's are the upstream side's, not background. */
  upstreamPid: number;
  setBytes: number;
}

const upstreamCpu = async (ctx: Ctx): Promise<number> => (await treeCpuSeconds(ctx.proxy.pid)) + (await treeCpuSeconds(ctx.upstreamPid));

/** One phase against a running mirror: RSS peak mark reset, the storm measured, the upstream's share of the log. */
async function phase(ctx: Ctx, mirror: Server, nodes: number, which: 'cold' | 'warm'): Promise<StormPhase> {
  const mark = (await proxyLog(ctx.proxy)).length;
  const reset = await resetPeakRss(mirror.pid);
  const poll = pollRss(mirror.pid, 25);
  const plan: Omit<StormPlan, 'nodes'> = {
    url: mirror.url,
    ns: BENCH_HOST,
    images: ctx.images.map((i) => ({ name: i.spec.name, tag: i.spec.tag })),
    platform: NODE_PLATFORM,
    layerConcurrency: ctx.s.stormLayerConcurrency,
  };
  const up0 = await upstreamCpu(ctx);
  const m = await measure(mirror.pid, () => runStormClients(plan, nodes, ctx.s.stormClientProcs));
  const upstreamCpuSeconds = (await upstreamCpu(ctx)) - up0;
  const polled = await poll.stop();
  const hwm = (await memoryOf(mirror.pid)).hwmBytes;
  const upstream = (await proxyLog(ctx.proxy)).slice(mark);
  const clientCpu = m.value.reduce((a, r) => a + r.cpuSeconds, 0);
  return summarisePhase(which, m.value, upstream, {
    peakRssBytes: reset ? Math.max(hwm, polled) : polled,
    serverCpuSeconds: m.serverCpuSeconds,
    upstreamCpuSeconds,
    backgroundCores: backgroundCores(m, clientCpu + upstreamCpuSeconds),
  });
}

async function startMirror(ctx: Ctx, target: StormTarget, dir: string, nodeArgs: string[]): Promise<Server> {
  if (target === 'registry') return startRegistryProxy(dir, ctx.proxy.url);
  const allowlist = ctx.images.map((i) => `${BENCH_HOST}/${i.spec.name}:${i.spec.tag}`);
  const cfg = await writeSluiceConfig(dir, { storage: join(dir, 'data'), upstreamUrl: ctx.proxy.url, windows: 'always', allowlist });
  return startSluice(cfg.file, cfg.port, { name: 'sluice-storm', nodeArgs });
}

const fmtS = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

function logPhase(target: StormTarget, nodes: number, p: StormPhase, setBytes: number): void {
  log(
    `  [6] N=${String(nodes).padEnd(3)} ${target.padEnd(8)} ${p.phase}: wall ${fmtS(p.wallMs)}, p99 node ${fmtS(p.p99TtlbMs)}, ${p.nodesOk}/${nodes} nodes ok, ` +
      `upstream ${p.upstreamRequests} req ${(p.upstreamBytes / 2 ** 20).toFixed(1)} MiB (${(p.upstreamBytes / setBytes).toFixed(2)}× set), ` +
      `slowest upstream request ${fmtS(p.upstreamSlowestMs)}, peak RSS ${(p.peakRssBytes / 2 ** 20).toFixed(0)} MiB, server ${p.serverCpuSeconds.toFixed(1)} CPU-s, client ${p.clientCpuSeconds.toFixed(1)} CPU-s, upstream+proxy ${p.upstreamCpuSeconds.toFixed(1)} CPU-s, background ${p.backgroundCores.toFixed(2)} cores` +
      (p.errors.length > 0 ? `\n      errors (${p.errors.length}): ${p.errors.slice(0, 3).join(' | ')}` : ''),
  );
}

/** Every round: for each N, each target in rotating order, a fresh mirror, cold then warm. */
export async function runStormCase(s: Settings, o: { images: StormImage[]; proxy: Server; upstreamPid: number; setBytes: number; workDir: string; nodeArgs?: string[] }): Promise<StormRun[]> {
  const ctx: Ctx = { s, images: o.images, proxy: o.proxy, upstreamPid: o.upstreamPid, setBytes: o.setBytes };
  const runs: StormRun[] = [];
  const targets: StormTarget[] = ['sluice', 'registry'];
  for (let round = 0; round < s.stormRounds; round++) {
    for (const nodes of s.stormNodes) {
      for (const target of rotate(targets, round)) {
        const dir = join(o.workDir, `storm-${target}-${nodes}-${round}`);
        const mirror = await startMirror(ctx, target, dir, o.nodeArgs ?? []);
        try {
          const cold = await phase(ctx, mirror, nodes, 'cold');
          logPhase(target, nodes, cold, o.setBytes);
          const warm = await phase(ctx, mirror, nodes, 'warm');
          logPhase(target, nodes, warm, o.setBytes);
          runs.push({ target, nodes, round, setBytes: o.setBytes, cold, warm });
        } finally {
          await mirror.stop();
          await rm(dir, { recursive: true, force: true });
        }
      }
    }
  }
  return runs;
}

/** The whole case: the set written and pushed to its own docker-registry, the counting proxy in front, every run. */
export async function stormCase(s: Settings, dir: string, nodeArgs: string[]): Promise<{ runs: StormRun[]; images: number }> {
  await mkdir(join(dir, 'content'), { recursive: true });
  const t0 = performance.now();
  const images = await writeStormImages(join(dir, 'content'), stormImageSet(s.stormInstallerBytes, s.stormLayerScale));
  const upstream = await startRegistry(join(dir, 'upstream'));
  try {
    await pushStormImages(upstream.url, images);
    const closure = nodeClosure(images);
    log(`  set: ${images.length} images, per node ${closure.manifests} manifests + ${closure.blobs} blobs = ${(closure.bytes / 2 ** 20).toFixed(1)} MiB (installer layer ${(s.stormInstallerBytes / 2 ** 20).toFixed(0)} MiB); built and pushed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const proxy = await startCountingProxy(dir, upstream.url.replace('http://', ''));
    try {
      const runs = await runStormCase(s, { images, proxy, upstreamPid: upstream.pid, setBytes: closure.bytes, workDir: dir, nodeArgs });
      return { runs, images: images.length };
    } finally {
      await proxy.stop();
    }
  } finally {
    await upstream.stop();
    await rm(join(dir, 'content'), { recursive: true, force: true });
  }
}
