// A counting reverse proxy put in front of docker-registry for the cold fan-in case: forwards every request
// and records when it arrived, when the upstream's headers and first body byte came back, and when it ended.
import { request as httpRequest, createServer, Agent } from 'node:http';
import { performance } from 'node:perf_hooks';

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one host. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

export interface ProxiedRequest {
  method: string;
  path: string;
  status: number;
  startMs: number;
  headersMs?: number;
  firstByteMs?: number;
  endMs?: number;
  bytes: number;
}

export const STATS_PATH = '/__bench/requests';

/** Child-process entry: `node count-proxy.js PORT TARGET_HOST:PORT`; GET /__bench/requests returns the log. */
function main(): void {
  const [portText, target] = process.argv.slice(2);
  const port = Number(portText);
  if (!Number.isInteger(port) || !target) {
    process.stderr.write('usage: count-proxy.js PORT TARGET_HOST:PORT\n');
    process.exitCode = 2;
    return;
  }
  const [host = '127.0.0.1', targetPort = '80'] = target.split(':');
  const agent = new Agent({ keepAlive: true });
  const log: ProxiedRequest[] = [];
  const srv = createServer((req, res) => {
    if (req.url === STATS_PATH) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(log));
      return;
    }
    const entry: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, startMs: epochMs(), bytes: 0 };
    log.push(entry);
    const up = httpRequest({ host, port: Number(targetPort), method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
      entry.headersMs = epochMs();
      entry.status = ur.statusCode ?? 0;
      res.writeHead(entry.status, ur.headers);
      ur.on('data', (chunk: Buffer) => {
        entry.firstByteMs ??= epochMs();
        entry.bytes += chunk.length;
      });
      ur.on('end', () => void (entry.endMs = epochMs()));
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  srv.listen(port, '127.0.0.1');
  process.once('SIGTERM', () => {
    srv.close();
    srv.closeAllConnections();
    agent.destroy();
  });
}

if (process.argv[1]?.endsWith('count-proxy.js')) main();
