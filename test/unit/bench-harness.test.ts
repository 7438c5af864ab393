// The bench harness's own parsing and formatting (wrk, bash `times`, /proc, HTTP heads, the ratio table),
// and a smoke run of case 1 and of the fan-in client against the in-process bare Node server.
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bareNodeServer, fileFor } from '../../bench/bare-server.js';
import { median, rotate, runRateCase, settings, summariseFanIn, type RateRun, type ThroughputRun } from '../../bench/cases.js';
import { writeLayout, writeStaticTree, type BenchImage } from '../../bench/content.js';
import { fanIn, parseHead } from '../../bench/getter.js';
import { parseTimes, parseWrk } from '../../bench/load.js';
import { parseProcStatCpu, parseStatusKb } from '../../bench/proc.js';
import { KiB, MiB } from '../kit/oci.js';
import { buildRows, clientCeilings, fmtMBps, rateRows, renderRows, renderTable, summaryLine, throughputRows, throughputTarget } from '../../bench/report.js';

const WRK_TEXT = `Running 4s test @ http://127.0.0.1:40000/v2/bench/img/blobs/sha256:ab
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   520.11ms  101.20ms 900.00ms   70.00%
    Req/Sec     1.20      0.40     2.00     80.00%
  96 requests in 4.02s, 6.03GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:     23.88
Transfer/sec:      1.50GB
`;

describe('wrk and shell output', () => {
  it('prefers the exact JSON line of the done() hook', () => {
    const json = 'WRK_JSON {"bytes":6442450944,"durationUs":4020000,"requests":96,"errors":{"connect":0,"read":0,"write":0,"status":0,"timeout":0}}';
    expect(parseWrk(`${WRK_TEXT}${json}\n`)).toEqual({
      bytes: 6442450944,
      durationUs: 4020000,
      requests: 96,
      errors: { connect: 0, read: 0, write: 0, status: 0, timeout: 0 },
    });
  });

  it('falls back to the text report, units included', () => {
    const s = parseWrk(WRK_TEXT);
    expect(s.requests).toBe(96);
    expect(s.durationUs).toBeCloseTo(4_020_000);
    expect(s.bytes).toBe(Math.round(6.03 * 1024 ** 3));
    expect(s.errors).toEqual({ connect: 0, read: 2, write: 0, timeout: 1, status: 3 });
  });

  it('refuses output it cannot read', () => {
    expect(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused')).toThrow(/cannot parse wrk/);
  });

  it("reads the children's line of bash `times`", () => {
    expect(parseTimes('0m0.001s 0m0.002s\n0m1.250s 0m0.750s\n')).toBeCloseTo(2.0);
    expect(parseTimes('noise\n0m0.000s 0m0.000s\n1m2.000s 0m0.500s')).toBeCloseTo(62.5);
    expect(() => parseTimes('nothing here')).toThrow();
  });
});

describe('/proc and HTTP parsing', () => {
  it('takes utime+stime from /proc/PID/stat even when the name holds spaces and parens', () => {
    const stat = '4242 (node (bench) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 11 0 100 1000 200';
    expect(parseProcStatCpu(stat)).toBeCloseTo(4.0);
  });

  it('reads kB lines of /proc/PID/status as bytes', () => {
    const status = 'Name:\tnode\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n';
    expect(parseStatusKb(status, 'VmRSS')).toBe(100 * 1024 * 1024);
    expect(parseStatusKb(status, 'VmHWM')).toBe(200 * 1024 * 1024);
    expect(parseStatusKb(status, 'VmSwap')).toBeUndefined();
  });

  it('parses a response head', () => {
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Type: x\r\nContent-Length: 1024')).toEqual({ status: 200, contentLength: 1024 });
    expect(parseHead('HTTP/1.1 404 Not Found\r\nconnection: close')).toEqual({ status: 404, contentLength: undefined });
  });

  it('maps only registry paths to files of the static tree', () => {
    expect(fileFor('/r', '/v2/bench/img/blobs/sha256:ab?ns=x')).toBe('/r/v2/bench/img/blobs/sha256:ab');
    expect(fileFor('/r', '/v2/bench/img/manifests/v1')).toBe('/r/v2/bench/img/manifests/v1');
    expect(fileFor('/r', '/v2/../../etc/passwd/blobs/x')).toBeUndefined();
    expect(fileFor('/r', '/etc/passwd')).toBeUndefined();
  });
});

const rate = (target: RateRun['target'], kind: RateRun['kind'], rps: number, p50Ms: number, p99Ms: number): RateRun => ({
  url: '',
  connections: 64,
  durationS: 1,
  rps,
  p50Ms,
  p99Ms,
  ok: rps,
  non2xx: 0,
  errors: 0,
  timeouts: 0,
  kind,
  target,
  round: 0,
  serverCpuSeconds: rps / 20_000,
  clientCpuSeconds: 1,
  backgroundCores: 0,
});

const tput = (target: ThroughputRun['target'], sizeBytes: number, connections: number, bytesPerSec: number, clientCpuSeconds = 1): ThroughputRun => ({
  url: '',
  connections,
  threads: 2,
  bytesPerSec,
  requests: 10,
  bytes: bytesPerSec * 4,
  durationS: 4,
  errors: 0,
  clientCpuSeconds,
  target,
  round: 0,
  sizeBytes,
  serverCpuSeconds: 1,
  backgroundCores: 0,
});

describe('ratio table', () => {
  it('takes medians over rounds and checks the manifest targets', () => {
    const runs = [
      rate('sluice', 'manifest by tag', 15_000, 3, 8),
      { ...rate('sluice', 'manifest by tag', 17_000, 3, 9), round: 1 },
      { ...rate('sluice', 'manifest by tag', 99_000, 3, 9), round: 2 },
      rate('registry', 'manifest by tag', 1_000, 50, 90),
      rate('bare', 'manifest by tag', 23_000, 2, 5),
    ];
    const [rps, cpu, latency] = rateRows(runs);
    expect(cpu?.cells.sluice?.text).toBe('50');
    expect(rps?.cells.sluice?.value).toBe(17_000);
    expect(rps?.vsRegistry).toBeCloseTo(17);
    expect(rps?.vsBare).toBeCloseTo(17_000 / 23_000);
    expect(rps?.checks).toEqual([
      { target: '≥10× registry', pass: true },
      { target: '≥0.6× bare fastify', pass: true },
    ]);
    expect(latency?.cells.sluice?.text).toBe('3.00 / 9.00');
    expect(latency?.checks).toEqual([{ target: 'p99 < registry p50', pass: true }]);
  });

  it('applies 1.2× at 64 MiB and up with 16 clients, 1.0× elsewhere, and 0.9× of bare node', () => {
    expect(throughputTarget(64 * MiB, 16)).toBe(1.2);
    expect(throughputTarget(256 * MiB, 16)).toBe(1.2);
    expect(throughputTarget(64 * MiB, 1)).toBe(1.0);
    expect(throughputTarget(1 * MiB, 16)).toBe(1.0);
    const rows = throughputRows([tput('sluice', 64 * MiB, 16, 1.3e9), tput('registry', 64 * MiB, 16, 1.0e9), tput('bare', 64 * MiB, 16, 1.5e9)]);
    expect(rows).toHaveLength(2);
    expect(rows[1]?.cells.registry?.text).toBe('0.25');
    expect(rows[0]?.checks).toEqual([
      { target: '≥1.2× registry', pass: true },
      { target: '≥0.9× bare node', pass: false },
    ]);
    expect(summaryLine(rows)).toBe('targets: 1/2 pass; missed: 2 blob 64MiB × 16 clients (bytes/s): ≥0.9× bare node');
  });

  it("shows the client's ceiling next to the fastest server", () => {
    const [c] = clientCeilings([tput('nginx', 64 * MiB, 16, 2e9, 2), tput('sluice', 64 * MiB, 16, 1e9, 1)]);
    expect(c).toMatchObject({ fastestTarget: 'nginx', fastestBytesPerSec: 2e9, bytesPerClientCpuSecond: 4e9, clientCores: 0.5, sluiceBytesPerSec: 1e9, clientNotLimitingSluice: true });
    const [close] = clientCeilings([tput('nginx', MiB, 1, 1e9), tput('sluice', MiB, 1, 0.9e9)]);
    expect(close?.clientNotLimitingSluice).toBe(false);
  });

  it('renders an aligned Markdown table', () => {
    expect(renderTable(['a', 'num'], [['xx', '1'], ['y', '1,000']], [false, true])).toBe(
      ['| a  |   num |', '|----|------:|', '| xx |     1 |', '| y  | 1,000 |'].join('\n'),
    );
    expect(fmtMBps(1_234_567_890)).toBe('1,235 MB/s');
    const text = renderRows(buildRows({ rate: [rate('sluice', 'blob 1 KiB', 5_000, 4, 9), rate('registry', 'blob 1 KiB', 500, 40, 90)] }));
    expect(text).toContain('| 1 blob 1 KiB');
    expect(text).toContain('10.0×');
  });

  it('rotates targets per round and takes medians', () => {
    expect(rotate(['a', 'b', 'c'], 1)).toEqual(['b', 'c', 'a']);
    expect(rotate(['a', 'b', 'c'], 3)).toEqual(['a', 'b', 'c']);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });
});

describe('smoke run against the bare Node server', () => {
  let work: string;
  let img: BenchImage;
  let url: string;
  let close: () => Promise<void>;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'sluice-bench-test-'));
    const layout = await writeLayout(join(work, 'layout'), [{ name: 'bench/img', tag: 'v1', sizes: [1 * KiB] }]);
    img = layout.images[0] as BenchImage;
    await writeStaticTree(join(work, 'static'), layout);
    const srv = bareNodeServer(join(work, 'static'));
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    close = async () => {
      srv.closeAllConnections();
      srv.close();
      await once(srv, 'close');
    };
  });

  afterAll(async () => {
    await close();
    await rm(work, { recursive: true, force: true });
  });

  it('case 1 produces one result per request kind, with rates and latencies', async () => {
    const s = { ...settings(true), rateConnections: 4, rateDurationS: 0.3, rateWarmupS: 0.1, noiseRetryShare: 0 };
    const runs = await runRateCase(s, { bare: { name: 'bare node', url, pid: process.pid } }, img);
    expect(runs.map((r) => r.kind)).toEqual(['manifest by tag', 'manifest by digest', 'blob 1 KiB']);
    for (const r of runs) {
      expect(r.target).toBe('bare');
      expect(r.ok).toBeGreaterThan(0);
      expect(r.rps).toBeGreaterThan(0);
      expect(r.non2xx + r.errors).toBe(0);
      expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
    }
    expect(rateRows(runs)).toHaveLength(9);
  });

  it('the fan-in client fetches whole bodies and times them', async () => {
    const blob = img.layers.get('1KiB');
    const r = await fanIn(`${url}/v2/${img.name}/blobs/${blob?.digest}`, 3);
    const s = summariseFanIn(r, 1024);
    expect(s).toMatchObject({ clients: 3, ok: 3 });
    expect(s.totalMs).toBeGreaterThan(0);
    expect(s.ttfbMinMs).toBeLessThanOrEqual(s.ttfbMaxMs);
  });
});
