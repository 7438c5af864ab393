// A body-discarding GET client for fan-in and memory cases, run in its own process: N raw HTTP/1.1
// connections opened at once, each timed (request, headers, first body byte, last byte) in wall-clock ms.
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';

export interface GetTiming {
  startMs: number;
  headersMs?: number;
  firstBodyMs?: number;
  endMs?: number;
  status: number;
  contentLength?: number;
  bodyBytes: number;
  error?: string;
}

export interface GetterResult {
  url: string;
  count: number;
  startMs: number;
  endMs: number;
  cpuSeconds: number;
  requests: GetTiming[];
}

const epochMs = (): number => performance.timeOrigin + performance.now();

/** Status and Content-Length of a response head (the bytes before the blank line). */
export function parseHead(head: string): { status: number; contentLength?: number } {
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1];
  return { status, contentLength: cl === undefined ? undefined : Number(cl) };
}

/** One GET on a fresh connection (Connection: close); resolves when the body is complete or the socket ends. */
export function timedGet(url: string, headers: Record<string, string> = {}): Promise<GetTiming> {
  const u = new URL(url);
  const t: GetTiming = { startMs: epochMs(), status: 0, bodyBytes: 0 };
  return new Promise((resolve) => {
    const sock = connect({ host: u.hostname, port: Number(u.port || 80) });
    let head: Buffer | undefined = Buffer.alloc(0);
    let settled = false;
    const finish = (error?: string): void => {
      if (settled) return;
      settled = true;
      t.endMs = epochMs();
      if (error) t.error = error;
      sock.destroy();
      resolve(t);
    };
    sock.setNoDelay(true);
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n${extra}Connection: close\r\n\r\n`);
    sock.on('data', (chunk: Buffer) => {
      if (head !== undefined) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        t.headersMs = epochMs();
        const parsed = parseHead(head.subarray(0, end).toString('latin1'));
        t.status = parsed.status;
        t.contentLength = parsed.contentLength;
        chunk = head.subarray(end + 4);
        head = undefined;
      }
      if (chunk.length > 0) {
        t.firstBodyMs ??= epochMs();
        t.bodyBytes += chunk.length;
      }
      if (t.contentLength !== undefined && t.bodyBytes >= t.contentLength) finish();
    });
    sock.on('end', () => finish(t.contentLength !== undefined && t.bodyBytes < t.contentLength ? 'connection closed early' : undefined));
    sock.on('error', (e) => finish(e.message));
  });
}

/** `count` GETs of `url` started together. */
export async function fanIn(url: string, count: number, headers: Record<string, string> = {}): Promise<GetterResult> {
  const cpu0 = process.cpuUsage();
  const startMs = epochMs();
  const requests = await Promise.all(Array.from({ length: count }, () => timedGet(url, headers)));
  const cpu = process.cpuUsage(cpu0);
  return { url, count, startMs, endMs: epochMs(), cpuSeconds: (cpu.user + cpu.system) / 1e6, requests };
}

/** Child-process entry: `node getter.js URL COUNT` prints one GetterResult as JSON. */
async function main(): Promise<void> {
  const [url, countText] = process.argv.slice(2);
  const count = Number(countText);
  if (!url || !Number.isInteger(count) || count < 1) {
    process.stderr.write('usage: getter.js URL COUNT\n');
    process.exitCode = 2;
    return;
  }
  process.stdout.write(`${JSON.stringify(await fanIn(url, count))}\n`);
}

if (process.argv[1]?.endsWith('getter.js')) void main();
