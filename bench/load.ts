// The load generators and the parsing of what they print: autocannon for request rates (small bodies only),
// wrk for blob throughput, with wrk's own CPU time taken from the shell so its ceiling can be shown.
import { writeFile } from 'node:fs/promises';
import autocannon from 'autocannon';
import { run } from '../test/kit/proc.js';

export interface RateResult {
  url: string;
  connections: number;
  durationS: number;
  /** 2xx answers per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

/** autocannon against one URL; the caller passes the same headers to every target. */
export async function requestRate(url: string, opts: { connections: number; durationS: number; headers?: Record<string, string> }): Promise<RateResult> {
  const r = await autocannon({ url, connections: opts.connections, duration: opts.durationS, headers: opts.headers, pipelining: 1 });
  return fromAutocannon(url, opts.connections, r);
}

export function fromAutocannon(url: string, connections: number, r: autocannon.Result): RateResult {
  const ok = r['2xx'];
  return {
    url,
    connections,
    durationS: r.duration,
    rps: r.duration > 0 ? ok / r.duration : 0,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    ok,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
  };
}

export interface WrkSummary {
  bytes: number;
  durationUs: number;
  requests: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
}

export interface ThroughputResult {
  url: string;
  connections: number;
  threads: number;
  /** Bytes read per second over the run (partial bodies included, as wrk counts them). */
  bytesPerSec: number;
  requests: number;
  bytes: number;
  durationS: number;
  errors: number;
  /** CPU seconds wrk itself used (user+system), from the shell's `times`. */
  clientCpuSeconds: number;
}

/** wrk's `done()` hook writes one JSON line with exact totals (its text report rounds bytes to 2 decimals). */
export const WRK_DONE_LUA = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"bytes":%d,"durationUs":%d,"requests":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.bytes, summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
`;

/** The JSON line of WRK_DONE_LUA, or the numbers of wrk's own text report when the script did not run. */
export function parseWrk(stdout: string): WrkSummary {
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (line) return JSON.parse(line.slice('WRK_JSON '.length)) as WrkSummary;
  const m = /(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read/.exec(stdout);
  if (!m) throw new Error(`cannot parse wrk output:\n${stdout.slice(0, 2000)}`);
  const timeUnit: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, m: 60e6 };
  const byteUnit: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(stdout);
  return {
    requests: Number(m[1]),
    durationUs: Number(m[2]) * (timeUnit[m[3] ?? 's'] ?? 1e6),
    bytes: Math.round(Number(m[4]) * (byteUnit[m[5] ?? 'B'] ?? 1)),
    errors: {
      connect: Number(sock?.[1] ?? 0),
      read: Number(sock?.[2] ?? 0),
      write: Number(sock?.[3] ?? 0),
      timeout: Number(sock?.[4] ?? 0),
      status: Number(non2xx?.[1] ?? 0),
    },
  };
}

/** bash's `times` prints the shell's and then its children's user/system time: `0m1.234s 0m0.567s`. */
export function parseTimes(text: string): number {
  const lines = text.trim().split('\n').filter((l) => /^\d+m[\d.]+s \d+m[\d.]+s$/.test(l.trim()));
  const children = lines[lines.length - 1];
  if (children === undefined) throw new Error(`no \`times\` output in: ${text.slice(-500)}`);
  let total = 0;
  for (const m of children.matchAll(/(\d+)m([\d.]+)s/g)) total += Number(m[1]) * 60 + Number(m[2]);
  return total;
}

/** wrk -t THREADS -c CONNECTIONS -d DURATION against one URL, with the done() JSON and wrk's CPU time. */
export async function blobThroughput(url: string, opts: { connections: number; durationS: number; scriptFile: string; threads?: number }): Promise<ThroughputResult> {
  // wrk takes whole seconds only.
  if (!Number.isInteger(opts.durationS) || opts.durationS < 1) throw new Error(`wrk duration must be a whole number of seconds, got ${opts.durationS}`);
  await writeFile(opts.scriptFile, WRK_DONE_LUA);
  const threads = opts.threads ?? Math.min(opts.connections, 2);
  const args = [`-t${threads}`, `-c${opts.connections}`, `-d${opts.durationS}s`, '--timeout', '60s', '-s', opts.scriptFile, url];
  const r = await run('bash', ['-c', 'wrk "$@"; rc=$?; times >&2; exit $rc', 'wrk', ...args], { timeoutMs: (opts.durationS + 120) * 1000 });
  if (r.code !== 0) throw new Error(`wrk ${args.join(' ')} exited ${r.code}: ${r.stderr.slice(-2000)}`);
  const s = parseWrk(r.stdout);
  const durationS = s.durationUs / 1e6;
  const e = s.errors;
  return {
    url,
    connections: opts.connections,
    threads,
    bytesPerSec: durationS > 0 ? s.bytes / durationS : 0,
    requests: s.requests,
    bytes: s.bytes,
    durationS,
    errors: e.connect + e.read + e.write + e.status + e.timeout,
    clientCpuSeconds: parseTimes(r.stderr),
  };
}
