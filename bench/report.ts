// Turns raw runs into the one table: medians across rounds, ratios of sluice to docker-registry and to the
// bare ceiling, and every target of issue 5 marked PASS or MISS; renders it as a Markdown table.
import { sizeLabel } from './content.js';
import type { Check, Row } from './rows.js';
import { stormRows } from './storm-report.js';
import type { StormRun } from './storm-report.js';
import { median, type FanInRun, type MemoryRun, type RateKind, type RateRun, type StartupRun, type TargetKey, type ThroughputRun } from './cases.js';

export type { Check, Row } from './rows.js';

export interface BenchResults {
  rate?: RateRun[];
  throughput?: ThroughputRun[];
  fanIn?: FanInRun[];
  memory?: MemoryRun;
  startup?: StartupRun;
  idleStoreBlobs?: number;
  storm?: StormRun[];
  /** How many images case 6 pulls per node. */
  stormImages?: number;
}

export const COLUMNS: Array<{ key: TargetKey; title: string }> = [
  { key: 'sluice', title: 'sluice' },
  { key: 'buffers', title: 'sluice, buffers' },
  { key: 'registry', title: 'docker-registry' },
  { key: 'nginx', title: 'nginx' },
  { key: 'bare', title: 'bare' },
];

export const fmtInt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
export const fmtMs = (n: number): string => (!Number.isFinite(n) ? '—' : Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2));
export const fmtMBps = (bytesPerSec: number): string => `${fmtInt(bytesPerSec / 1e6)} MB/s`;
export const fmtMiB = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
export const fmtRatio = (r: number | undefined): string => (r === undefined || !Number.isFinite(r) ? '' : `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`);

const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined || b === 0 ? undefined : a / b;

/** Medians of one figure per target over the rounds. */
function medianBy<T extends { target: TargetKey }>(runs: T[], pick: (r: T) => number): Partial<Record<TargetKey, number>> {
  const out: Partial<Record<TargetKey, number>> = {};
  for (const { key } of COLUMNS) {
    const xs = runs.filter((r) => r.target === key).map(pick);
    if (xs.length > 0) out[key] = median(xs);
  }
  return out;
}

function cells(values: Partial<Record<TargetKey, number>>, fmt: (n: number) => string): Row['cells'] {
  const out: Row['cells'] = {};
  for (const [k, v] of Object.entries(values) as Array<[TargetKey, number]>) out[k] = { value: v, text: fmt(v) };
  return out;
}

const MANIFEST_KINDS: RateKind[] = ['manifest by tag', 'manifest by digest'];

export function rateRows(runs: RateRun[]): Row[] {
  const rows: Row[] = [];
  const kinds = [...new Set(runs.map((r) => r.kind))];
  for (const kind of kinds) {
    const mine = runs.filter((r) => r.kind === kind);
    const rps = medianBy(mine, (r) => r.rps);
    const p50 = medianBy(mine, (r) => r.p50Ms);
    const p99 = medianBy(mine, (r) => r.p99Ms);
    const vsRegistry = ratio(rps.sluice, rps.registry);
    const vsBare = ratio(rps.sluice, rps.bare);
    const isManifest = MANIFEST_KINDS.includes(kind);
    const failures = mine.filter((r) => r.non2xx + r.errors > 0).length;
    rows.push({
      case: `1 ${kind}`,
      metric: 'req/s (64 conn)',
      cells: cells(rps, fmtInt),
      vsRegistry,
      vsBare,
      checks: isManifest
        ? [
            { target: '≥10× registry', pass: (vsRegistry ?? 0) >= 10 },
            { target: '≥0.6× bare fastify', pass: (vsBare ?? 0) >= 0.6 },
          ]
        : [],
      note: failures > 0 ? `${failures} run(s) had non-2xx answers or errors` : undefined,
    });
    const lat: Row['cells'] = {};
    for (const { key } of COLUMNS) {
      const a = p50[key];
      const b = p99[key];
      if (a !== undefined && b !== undefined) lat[key] = { value: b, text: `${fmtMs(a)} / ${fmtMs(b)}` };
    }
    const cpu = medianBy(mine, (r) => (r.ok > 0 ? (r.serverCpuSeconds / r.ok) * 1e6 : NaN));
    rows.push({
      case: '',
      metric: 'server CPU µs per request',
      cells: cells(cpu, (n) => fmtInt(n)),
      vsRegistry: ratio(cpu.sluice, cpu.registry),
      vsBare: ratio(cpu.sluice, cpu.bare),
      checks: [],
    });
    rows.push({
      case: '',
      metric: 'p50 / p99 ms',
      cells: lat,
      checks: isManifest && p99.sluice !== undefined && p50.registry !== undefined ? [{ target: 'p99 < registry p50', pass: p99.sluice < p50.registry }] : [],
    });
  }
  return rows;
}

/** Issue 5: ≥ 1.2× docker-registry at 64 and 256 MiB with 16 clients, ≥ 1.0× elsewhere, ≥ 0.9× bare Node. */
export function throughputTarget(sizeBytes: number, clients: number): number {
  return clients >= 16 && sizeBytes >= 64 * 1024 * 1024 ? 1.2 : 1.0;
}

export function throughputRows(runs: ThroughputRun[]): Row[] {
  const rows: Row[] = [];
  const sizes = [...new Set(runs.map((r) => r.sizeBytes))].sort((a, b) => a - b);
  const clientCounts = [...new Set(runs.map((r) => r.connections))].sort((a, b) => a - b);
  for (const size of sizes) {
    for (const clients of clientCounts) {
      const mine = runs.filter((r) => r.sizeBytes === size && r.connections === clients);
      if (mine.length === 0) continue;
      const bps = medianBy(mine, (r) => r.bytesPerSec);
      const vsRegistry = ratio(bps.sluice, bps.registry);
      const vsBare = ratio(bps.sluice, bps.bare);
      const want = throughputTarget(size, clients);
      const failures = mine.filter((r) => r.errors > 0).length;
      rows.push({
        case: `2 blob ${sizeLabel(size)} × ${clients} client${clients > 1 ? 's' : ''}`,
        metric: 'bytes/s',
        cells: cells(bps, fmtMBps),
        vsRegistry,
        vsBare,
        checks: [
          { target: `≥${want.toFixed(1)}× registry`, pass: (vsRegistry ?? 0) >= want },
          { target: '≥0.9× bare node', pass: (vsBare ?? 0) >= 0.9 },
        ],
        note: failures > 0 ? `${failures} run(s) had errors` : undefined,
      });
      const cpu = medianBy(mine, (r) => (r.bytes > 0 ? r.serverCpuSeconds / (r.bytes / 1e9) : NaN));
      rows.push({
        case: '',
        metric: 'server CPU s per GB',
        cells: cells(cpu, (n) => n.toFixed(2)),
        vsRegistry: ratio(cpu.sluice, cpu.registry),
        vsBare: ratio(cpu.sluice, cpu.bare),
        checks: [],
      });
    }
  }
  return rows;
}

export interface ClientCeiling {
  sizeBytes: number;
  clients: number;
  /** The most this client (wrk) absorbed in this run, from whichever server was fastest. */
  fastestTarget: TargetKey;
  fastestBytesPerSec: number;
  /** Share of a core wrk used in that fastest run (out of the machine's cores, shared with the server). */
  clientCores: number;
  /** Bytes wrk reads per second of its own CPU in that run (the kernel's copy to user space included). */
  bytesPerClientCpuSecond: number;
  sluiceBytesPerSec?: number;
  /** True when sluice's median is at most 80% of what the client demonstrably absorbed. */
  clientNotLimitingSluice?: boolean;
}

/** The client's demonstrated ceiling (its best run against any server) next to sluice's figure, per size and client count. */
export function clientCeilings(runs: ThroughputRun[]): ClientCeiling[] {
  const out: ClientCeiling[] = [];
  const keys = [...new Set(runs.map((r) => `${r.sizeBytes}:${r.connections}`))];
  for (const key of keys) {
    const mine = runs.filter((r) => `${r.sizeBytes}:${r.connections}` === key);
    const fastest = mine.reduce((a, b) => (b.bytesPerSec > a.bytesPerSec ? b : a));
    const sluice = mine.filter((r) => r.target === 'sluice').map((r) => r.bytesPerSec);
    const sluiceBytesPerSec = sluice.length > 0 ? median(sluice) : undefined;
    out.push({
      sizeBytes: fastest.sizeBytes,
      clients: fastest.connections,
      fastestTarget: fastest.target,
      fastestBytesPerSec: fastest.bytesPerSec,
      clientCores: fastest.durationS > 0 ? fastest.clientCpuSeconds / fastest.durationS : 0,
      bytesPerClientCpuSecond: fastest.clientCpuSeconds > 0 ? fastest.bytes / fastest.clientCpuSeconds : Infinity,
      sluiceBytesPerSec,
      clientNotLimitingSluice: sluiceBytesPerSec === undefined ? undefined : sluiceBytesPerSec <= 0.8 * fastest.bytesPerSec,
    });
  }
  return out.sort((a, b) => a.sizeBytes - b.sizeBytes || a.clients - b.clients);
}

export function ceilingRows(ceilings: ClientCeiling[]): Row[] {
  return ceilings.map((c) => ({
    case: `2 ↳ client ceiling, ${sizeLabel(c.sizeBytes)} × ${c.clients}`,
    metric: 'wrk, best run',
    cells: { [c.fastestTarget]: { value: c.fastestBytesPerSec, text: fmtMBps(c.fastestBytesPerSec) } },
    checks: [],
    note:
      `wrk absorbed ${fmtMBps(c.fastestBytesPerSec)} from ${c.fastestTarget} using ${c.clientCores.toFixed(2)} cores` +
      (c.sluiceBytesPerSec === undefined
        ? ''
        : `; sluice's ${fmtMBps(c.sluiceBytesPerSec)} is ${((100 * c.sluiceBytesPerSec) / c.fastestBytesPerSec).toFixed(0)}% of that: ` +
          (c.clientNotLimitingSluice ? 'the client is not what limits sluice' : 'THE CLIENT MAY LIMIT SLUICE HERE')),
  }));
}

export function fanInRows(runs: FanInRun[]): Row[] {
  if (runs.length === 0) return [];
  const m = (pick: (r: FanInRun) => number): number => median(runs.map(pick));
  const clients = runs[0]?.cold.clients ?? 0;
  const gets = Math.max(...runs.map((r) => r.upstreamBlobGets));
  const total = m((r) => r.cold.totalMs);
  const direct = m((r) => r.direct.totalMs);
  const firstByte = m((r) => r.firstClientVsUpstreamFirstByteMs);
  const okAll = runs.every((r) => r.cold.ok === r.cold.clients);
  return [
    {
      case: `3 cold fan-in, 64 MiB × ${clients}`,
      metric: 'upstream blob GETs',
      cells: { sluice: { value: gets, text: runs.map((r) => String(r.upstreamBlobGets)).join(', ') } },
      checks: [{ target: 'exactly 1', pass: runs.every((r) => r.upstreamBlobGets === 1) }],
      note: okAll ? undefined : 'some clients did not get the whole blob',
    },
    {
      case: '',
      metric: 'total ms (registry: 1 direct GET)',
      cells: { sluice: { value: total, text: fmtMs(total) }, registry: { value: direct, text: fmtMs(direct) } },
      vsRegistry: ratio(total, direct),
      checks: [{ target: '≤1.3× direct download', pass: total <= 1.3 * direct }],
      note: `${clients} clients move ${clients}× the bytes of the one direct download; cold ÷ warm (the same GETs served from cache) ${fmtRatio(total / m((r) => r.warm.totalMs))}`,
    },
    {
      case: '',
      metric: 'TTFB ms min / median / max',
      cells: {
        sluice: { value: m((r) => r.cold.ttfbMedianMs), text: `${fmtMs(m((r) => r.cold.ttfbMinMs))} / ${fmtMs(m((r) => r.cold.ttfbMedianMs))} / ${fmtMs(m((r) => r.cold.ttfbMaxMs))}` },
        registry: { value: m((r) => r.direct.ttfbMedianMs), text: fmtMs(m((r) => r.direct.ttfbMedianMs)) },
      },
      checks: [],
    },
    {
      case: '',
      metric: "first client's 1st body byte − upstream's, ms",
      cells: { sluice: { value: firstByte, text: fmtMs(firstByte) } },
      checks: [{ target: '≤50 ms', pass: firstByte <= 50 }],
    },
    {
      case: '',
      metric: `same ${clients} GETs once cached, total ms`,
      cells: { sluice: { value: m((r) => r.warm.totalMs), text: fmtMs(m((r) => r.warm.totalMs)) } },
      vsRegistry: ratio(m((r) => r.warm.totalMs), direct),
      checks: [],
      note: `sluice's one upstream GET: sent ${fmtMs(m((r) => r.upstreamRequestAfterMs))} ms after the clients started, first byte at ${fmtMs(m((r) => r.upstreamFirstByteAfterMs))} ms, transfer ${fmtMs(m((r) => r.upstreamTransferMs))} ms`,
    },
  ];
}

export function memoryRows(mem: MemoryRun | undefined, startup: StartupRun | undefined, storeBlobs: number | undefined): Row[] {
  const rows: Row[] = [];
  if (mem) {
    rows.push({
      case: `4 peak RSS, ${mem.clients} × ${sizeLabel(mem.blobBytes)} GETs`,
      metric: 'VmHWM',
      cells: { sluice: { value: mem.peakRssBytes, text: fmtMiB(mem.peakRssBytes) } },
      checks: [{ target: '≤256 MiB', pass: mem.peakRssBytes <= 256 * 1024 * 1024 }],
      note: `RSS before ${fmtMiB(mem.rssBeforeBytes)}; ${mem.load.ok}/${mem.clients} complete at ${fmtMBps((mem.blobBytes * mem.load.ok) / (mem.load.totalMs / 1000))}`,
    });
  }
  if (startup) {
    const label = storeBlobs === undefined ? '' : `, ${fmtInt(storeBlobs)} blobs`;
    rows.push({
      case: `4 idle RSS${label}`,
      metric: 'VmRSS',
      cells: { sluice: { value: startup.idleRssBytes, text: fmtMiB(startup.idleRssBytes) } },
      checks: [],
      note: `${fmtMiB(startup.rssAfterFirstManifestBytes)} after a first manifest GET`,
    });
    const med = median(startup.runsMs);
    rows.push({
      case: `5 start-up${label}`,
      metric: 'launch → GET /v2/ 200, ms',
      cells: { sluice: { value: med, text: fmtMs(med) } },
      checks: [{ target: '<500 ms', pass: med < 500 }],
      note: `runs: ${startup.runsMs.map(fmtMs).join(', ')}; sluice CPU until then: ${startup.cpuMs.map(fmtMs).join(', ')}`,
    });
    const emptyMed = median(startup.emptyRunsMs);
    rows.push({
      case: '5 start-up, empty store',
      metric: 'launch → GET /v2/ 200, ms',
      cells: { sluice: { value: emptyMed, text: fmtMs(emptyMed) } },
      checks: [{ target: '<300 ms', pass: emptyMed < 300 }],
      note: `runs: ${startup.emptyRunsMs.map(fmtMs).join(', ')}; sluice CPU until then: ${startup.emptyCpuMs.map(fmtMs).join(', ')}`,
    });
  }
  return rows;
}

export function buildRows(r: BenchResults): Row[] {
  return [
    ...rateRows(r.rate ?? []),
    ...throughputRows(r.throughput ?? []),
    ...ceilingRows(clientCeilings(r.throughput ?? [])),
    ...fanInRows(r.fanIn ?? []),
    ...memoryRows(r.memory, r.startup, r.idleStoreBlobs),
    ...stormRows(r.storm ?? [], r.stormImages ?? 0),
  ];
}

/** How busy the rest of the machine was during cases 1 and 2 (other users of a shared box skew ratios). */
export function backgroundLine(r: BenchResults): string {
  const part = (label: string, xs: number[]): string | undefined =>
    xs.length === 0 ? undefined : `${label} median ${median(xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)} cores`;
  const parts = [part('case 1', (r.rate ?? []).map((x) => x.backgroundCores)), part('case 2', (r.throughput ?? []).map((x) => x.backgroundCores))].filter(
    (p): p is string => p !== undefined,
  );
  return parts.length === 0 ? '' : `other processes on this machine kept busy: ${parts.join('; ')}`;
}

export function checkText(checks: Check[]): string {
  return checks.map((c) => `${c.pass ? 'PASS' : 'MISS'} ${c.target}`).join('; ');
}

/** A Markdown pipe table, padded so it also reads well in a terminal. */
export function renderTable(header: string[], body: string[][], rightAlign: boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (cols: string[]): string =>
    `| ${cols.map((c, i) => (rightAlign[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (rightAlign[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

export const BARE_NOTE = 'bare = fastify route from memory (case 1), Node http + createReadStream (case 2)';

export function renderRows(rows: Row[], bareNote = BARE_NOTE): string {
  const header = ['case', 'metric', ...COLUMNS.map((c) => c.title), 'sluice ÷ registry', 'sluice ÷ bare', 'targets / notes'];
  const body = rows.map((r) => [
    r.case,
    r.metric,
    ...COLUMNS.map((c) => r.cells[c.key]?.text ?? ''),
    fmtRatio(r.vsRegistry),
    fmtRatio(r.vsBare),
    [checkText(r.checks), r.note ?? ''].filter((t) => t !== '').join(' — '),
  ]);
  const right = [false, false, true, true, true, true, true, true, false];
  return `${renderTable(header, body, right)}\n\n${bareNote}`;
}

export function summaryLine(rows: Row[]): string {
  let total = 0;
  const missed: string[] = [];
  let parent = '';
  for (const r of rows) {
    if (r.case !== '') parent = r.case;
    for (const c of r.checks) {
      total++;
      if (!c.pass) missed.push(`${parent} (${r.metric}): ${c.target}`);
    }
  }
  return `targets: ${total - missed.length}/${total} pass${missed.length > 0 ? `; missed: ${missed.join(' | ')}` : ''}`;
}
