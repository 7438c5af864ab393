// Case 6's figures: a phase's summary from the client processes' node results and the counting proxy's log
// (pure), and its rows in the one table, medians across rounds, the targets marked PASS or MISS.
import type { ProxiedRequest } from './count-proxy.js';
import type { StormClientResult } from './storm-client.js';
import { median } from './cases.js';
import type { Row } from './rows.js';

/** 'registry' is distribution (docker-registry) in its proxy mode, in the table's docker-registry column. */
export type StormTarget = 'sluice' | 'registry';

export interface StormPhase {
  phase: 'cold' | 'warm';
  /** First node's start to the last node's last byte. */
  wallMs: number;
  /** Per node: its start to the last byte of its last image. */
  p50TtlbMs: number;
  p99TtlbMs: number;
  maxTtlbMs: number;
  nodesOk: number;
  errors: string[];
  clientRequests: number;
  clientBytes: number;
  upstreamRequests: number;
  upstreamBlobGets: number;
  /** Response body bytes the upstream sent, as counted by the proxy in front of it. */
  upstreamBytes: number;
  /** The slowest upstream request, start to last byte (for the mirror's fetch of the installer layer, its transfer). */
  upstreamSlowestMs: number;
  peakRssBytes: number;
  serverCpuSeconds: number;
  clientCpuSeconds: number;
  /** The upstream docker-registry and the counting proxy in front of it. */
  upstreamCpuSeconds: number;
  /** Cores other processes of the machine kept busy meanwhile (noise on a shared box). */
  backgroundCores: number;
}

export interface StormRun {
  target: StormTarget;
  nodes: number;
  round: number;
  /** What one node needs of the set (amd64 closure, shared blobs once): the floor for upstream bytes. */
  setBytes: number;
  cold: StormPhase;
  warm: StormPhase;
}

/** The nearest-rank percentile (p in 0..100) of `xs`; NaN when empty. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length, Math.max(1, rank)) - 1] ?? NaN;
}

export function summarisePhase(
  phase: 'cold' | 'warm',
  clients: StormClientResult[],
  upstream: ProxiedRequest[],
  server: { peakRssBytes: number; serverCpuSeconds: number; upstreamCpuSeconds: number; backgroundCores: number },
): StormPhase {
  const nodes = clients.flatMap((c) => c.nodes);
  const ttlb = nodes.map((n) => n.endMs - n.startMs);
  return {
    phase,
    wallMs: nodes.length === 0 ? NaN : Math.max(...nodes.map((n) => n.endMs)) - Math.min(...nodes.map((n) => n.startMs)),
    p50TtlbMs: percentile(ttlb, 50),
    p99TtlbMs: percentile(ttlb, 99),
    maxTtlbMs: percentile(ttlb, 100),
    nodesOk: nodes.filter((n) => n.errors.length === 0).length,
    errors: nodes.flatMap((n) => n.errors.map((e) => `node ${n.node}: ${e}`)),
    clientRequests: nodes.reduce((a, n) => a + n.requests, 0),
    clientBytes: nodes.reduce((a, n) => a + n.bodyBytes, 0),
    upstreamRequests: upstream.length,
    upstreamBlobGets: upstream.filter((q) => q.method === 'GET' && q.path.includes('/blobs/sha256:')).length,
    upstreamBytes: upstream.reduce((a, q) => a + q.bytes, 0),
    upstreamSlowestMs: upstream.reduce((a, q) => Math.max(a, (q.endMs ?? q.startMs) - q.startMs), 0),
    clientCpuSeconds: clients.reduce((a, c) => a + c.cpuSeconds, 0),
    ...server,
  };
}

const fmtSec = (ms: number): string => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : '—');
const fmtMiB = (b: number): string => `${(b / 2 ** 20).toFixed(b >= 100 * 2 ** 20 ? 0 : 1)} MiB`;
const ratioOf = (a: number, b: number): number | undefined => (b > 0 && Number.isFinite(a) && Number.isFinite(b) ? a / b : undefined);

/** At every N: cold ≥2× faster than distribution, warm ≥1.5×, and no more than 1.05× the set fetched upstream. */
export const COLD_SPEEDUP = 2;
export const COLD_MAX_BYTES_RATIO = 1.05;
export const WARM_SPEEDUP = 1.5;

type Pick = (p: StormPhase) => number;

function medians(runs: StormRun[], phase: 'cold' | 'warm', pick: Pick): Partial<Record<StormTarget, number>> {
  const out: Partial<Record<StormTarget, number>> = {};
  for (const t of ['sluice', 'registry'] as const) {
    const xs = runs.filter((r) => r.target === t).map((r) => pick(r[phase]));
    if (xs.length > 0) out[t] = median(xs);
  }
  return out;
}

function timeRow(runs: StormRun[], phase: 'cold' | 'warm', metric: string, pick: Pick, speedup?: number): Row {
  const m = medians(runs, phase, pick);
  const cells: Row['cells'] = {};
  for (const t of ['sluice', 'registry'] as const) {
    const v = m[t];
    if (v !== undefined) cells[t] = { value: v, text: fmtSec(v) };
  }
  const vs = ratioOf(m.sluice ?? NaN, m.registry ?? NaN);
  const per = (t: StormTarget): string => runs.filter((r) => r.target === t).map((r) => fmtSec(pick(r[phase]))).join(', ');
  // A target holds in every round, each round's sluice against the same round's distribution: a median would hide a miss.
  const rounds = [...new Set(runs.map((r) => r.round))];
  const roundRatio = (round: number): number | undefined => {
    const of = (t: StormTarget): number => {
      const r = runs.find((x) => x.round === round && x.target === t);
      return r === undefined ? NaN : pick(r[phase]);
    };
    return ratioOf(of('sluice'), of('registry'));
  };
  const everyRound = (limit: number): boolean => rounds.length > 0 && rounds.every((round) => (roundRatio(round) ?? Infinity) <= limit);
  return {
    case: '',
    metric,
    cells,
    vsRegistry: vs,
    checks: speedup === undefined ? [] : [{ target: `≥${speedup}× faster than distribution (≤${(1 / speedup).toFixed(2)}×), every run`, pass: everyRound(1 / speedup) }],
    note: runs.length > 2 ? `runs: sluice ${per('sluice')}; distribution ${per('registry')}` : undefined,
  };
}

/** p50 / p99 of the per-node time to last byte (nearest rank: with ≤100 nodes, p99 is the slowest node). */
function ttlbRow(runs: StormRun[], phase: 'cold' | 'warm'): Row {
  const row = timeRow(runs, phase, `${phase}: node time-to-last-byte p50 / p99`, (p) => p.p99TtlbMs);
  const p50 = medians(runs, phase, (p) => p.p50TtlbMs);
  for (const t of ['sluice', 'registry'] as const) {
    const c = row.cells[t];
    if (c) c.text = `${fmtSec(p50[t] ?? NaN)} / ${c.text}`;
  }
  return { ...row, note: undefined };
}

function upstreamRow(runs: StormRun[], phase: 'cold' | 'warm', setBytes: number, checkBytes: boolean): Row {
  const req = medians(runs, phase, (p) => p.upstreamRequests);
  const bytes = medians(runs, phase, (p) => p.upstreamBytes);
  const blobGets = medians(runs, phase, (p) => p.upstreamBlobGets);
  const cells: Row['cells'] = {};
  for (const t of ['sluice', 'registry'] as const) {
    const b = bytes[t];
    if (b !== undefined) cells[t] = { value: b, text: `${Math.round(req[t] ?? 0)} req (${Math.round(blobGets[t] ?? 0)} blob GETs), ${fmtMiB(b)} = ${(b / setBytes).toFixed(2)}× set` };
  }
  const worst = Math.max(...runs.filter((r) => r.target === 'sluice').map((r) => r[phase].upstreamBytes));
  return {
    case: '',
    metric: `${phase}: upstream requests, bytes`,
    cells,
    vsRegistry: ratioOf(bytes.sluice ?? NaN, bytes.registry ?? NaN),
    checks: checkBytes ? [{ target: `sluice ≤${COLD_MAX_BYTES_RATIO}× the set's bytes, every run`, pass: Number.isFinite(worst) && worst <= COLD_MAX_BYTES_RATIO * setBytes }] : [],
  };
}

function rssRow(runs: StormRun[]): Row {
  const cold = medians(runs, 'cold', (p) => p.peakRssBytes);
  const warm = medians(runs, 'warm', (p) => p.peakRssBytes);
  const cells: Row['cells'] = {};
  for (const t of ['sluice', 'registry'] as const) {
    const c = cold[t];
    if (c !== undefined) cells[t] = { value: c, text: `${fmtMiB(c)} / ${fmtMiB(warm[t] ?? NaN)}` };
  }
  return { case: '', metric: 'peak RSS of the mirror, cold / warm', cells, vsRegistry: ratioOf(cold.sluice ?? NaN, cold.registry ?? NaN), checks: [] };
}

/** Where the CPU went (medians): the mirror, the simulated nodes, and other processes on the machine. */
function cpuNote(runs: StormRun[], phase: 'cold' | 'warm'): string {
  const part = (t: StormTarget, name: string): string => {
    const mine = runs.filter((r) => r.target === t).map((r) => r[phase]);
    if (mine.length === 0) return '';
    const gb = median(mine.map((p) => p.clientBytes)) / 1e9;
    const slowest = phase === 'cold' ? `, slowest upstream request ${fmtSec(median(mine.map((p) => p.upstreamSlowestMs)))}` : '';
    return `${name}: server ${median(mine.map((p) => p.serverCpuSeconds)).toFixed(1)} CPU-s, nodes ${median(mine.map((p) => p.clientCpuSeconds)).toFixed(1)} CPU-s for ${gb.toFixed(2)} GB, upstream+proxy ${median(mine.map((p) => p.upstreamCpuSeconds)).toFixed(1)} CPU-s, background ${median(mine.map((p) => p.backgroundCores)).toFixed(2)} cores${slowest}`;
  };
  return [part('sluice', 'sluice'), part('registry', 'distribution')].filter((t) => t !== '').join('; ');
}

const joinNotes = (...notes: Array<string | undefined>): string | undefined => notes.filter((t) => t !== undefined && t !== '').join(' — ') || undefined;

function errorNote(runs: StormRun[]): string | undefined {
  const bad = runs.flatMap((r) => [r.cold, r.warm].filter((p) => p.errors.length > 0).map((p) => `${r.target} ${p.phase} round ${r.round}: ${p.errors.length} failed pulls (${p.errors[0]})`));
  return bad.length === 0 ? undefined : bad.join('; ');
}

/** The rows of one node count. */
function stormRowsFor(runs: StormRun[], nodes: number, images: number): Row[] {
  const setBytes = runs[0]?.setBytes ?? NaN;
  const head = timeRow(runs, 'cold', 'cold: wall time', (p) => p.wallMs, COLD_SPEEDUP);
  const warm = timeRow(runs, 'warm', 'warm: wall time', (p) => p.wallMs, WARM_SPEEDUP);
  const errors = errorNote(runs);
  return [
    {
      ...head,
      case: `6 boot storm, ${nodes} nodes × ${images} images (${fmtMiB(setBytes)} each)`,
      note: joinNotes(head.note, cpuNote(runs, 'cold'), errors ? `ERRORS: ${errors}` : undefined),
      checks: [...head.checks, { target: 'every node pulled every image', pass: errors === undefined }],
    },
    ttlbRow(runs, 'cold'),
    upstreamRow(runs, 'cold', setBytes, true),
    { ...warm, note: joinNotes(warm.note, cpuNote(runs, 'warm')) },
    ttlbRow(runs, 'warm'),
    upstreamRow(runs, 'warm', setBytes, false),
    rssRow(runs),
  ];
}

export function stormRows(runs: StormRun[], images: number): Row[] {
  const counts = [...new Set(runs.map((r) => r.nodes))].sort((a, b) => a - b);
  return counts.flatMap((n) => stormRowsFor(runs.filter((r) => r.nodes === n), n, images));
}
