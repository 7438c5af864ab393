// Running the built sluice CLI as its own process: `serve` until stopped, or any other subcommand to
// completion. Loopback only; the address comes from its log line or the configured port.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { parse as parseYaml } from 'yaml';
import { run, type RunResult } from './proc.js';

/** The nearest folder above `dir` holding package.json: test/kit/ runs from source (vitest) and from dist/test/kit (the bench). */
function checkoutRoot(dir: string): string {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, 'package.json'))) return d;
    if (dirname(d) === d) throw new Error(`no package.json above ${dir}`);
  }
}

/** The checkout root (the folder holding package.json and dist/). */
export const REPO_ROOT = checkoutRoot(dirname(fileURLToPath(import.meta.url)));
/** The built CLI entry; tests that spawn sluice need `npx tsc -p tsconfig.json` (npm test's pretest) first. */
export const SLUICE_MAIN = join(REPO_ROOT, 'dist', 'src', 'main.js');

/** The Node flags a host runs `sluice serve` under (the release launcher's, src/release/node-flags.ts; a test checks they agree). */
export const SERVE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];

export interface SluiceProcess {
  /** `http://127.0.0.1:PORT` of the registry listener. */
  url: string;
  hostPort: string;
  /** The folder holding the config file (relative paths in it resolve here). */
  dir: string;
  configFile: string;
  proc: ChildProcess;
  /** Sends `signal` (default SIGTERM) and resolves with the exit code (or the signal name) once it exits. */
  stop(signal?: NodeJS.Signals): Promise<number | NodeJS.Signals>;
  stdout(): string;
  stderr(): string;
}

export interface StartProcessOptions {
  /** Where the config file is written; default a fresh temp folder (removed by stop only if created here). */
  dir?: string;
  env?: NodeJS.ProcessEnv;
  /** How long to wait for GET /v2/ to answer; default 20 s. */
  startTimeoutMs?: number;
}

/**
 * Writes `configYaml` to DIR/sluice.yaml and spawns `node dist/src/main.js serve --config FILE`,
 * then waits until it listens (a bounded poll: process start is the one wait by polling): its
 * "registry listening" log line gives the address (so `listen: 127.0.0.1:0` works, and https), else
 * GET /v2/ on the configured port must answer 200 or 401. Binds only where the config says: use 127.0.0.1.
 */
export async function startSluiceProcess(configYaml: string, opts: StartProcessOptions = {}): Promise<SluiceProcess> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'sluice-proc-')));
  const configFile = join(dir, 'sluice.yaml');
  await writeFile(configFile, configYaml);
  const configuredPort = listenPort(configYaml);
  const proc = spawn(process.execPath, [...SERVE_NODE_FLAGS, SLUICE_MAIN, 'serve', '--config', configFile], {
    cwd: dir,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => void (out += s));
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => void (err += s));
  let exit: number | NodeJS.Signals | undefined;
  const exited = once(proc, 'exit').then(([code, signal]: unknown[]) => {
    exit = (code as number | null) ?? (signal as NodeJS.Signals);
    return exit;
  });
  proc.on('error', (e) => void (err += `\nspawn error: ${e.message}`));

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | NodeJS.Signals> => {
    if (exit === undefined) proc.kill(signal);
    const result = await exited;
    if (ownDir) await rm(dir, { recursive: true, force: true });
    return result;
  };

  const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
  while (Date.now() < deadline && exit === undefined) {
    const logged = addressFromLog(out + err);
    const url = logged ?? (configuredPort ? `http://127.0.0.1:${configuredPort}` : undefined);
    // The "registry listening" line is written once listen() resolved; without it, ask GET /v2/.
    const ready = url !== undefined && (logged?.startsWith('https:') || [200, 401].includes(await fetch(`${url}/v2/`).then((r) => r.status, () => 0)));
    if (url !== undefined && ready) {
      return { url, hostPort: new URL(url).host, dir, configFile, proc, stop, stdout: () => out, stderr: () => err };
    }
    await delay(50);
  }
  const code = exit;
  if (code === undefined) await stop('SIGKILL');
  else if (ownDir) await rm(dir, { recursive: true, force: true });
  throw new Error(`sluice serve did not answer GET /v2/ (exit ${String(code)}):\nstdout:\n${out.slice(-3000)}\nstderr:\n${err.slice(-3000)}`);
}

function listenPort(configYaml: string): number {
  const doc: unknown = parseYaml(configYaml);
  const listen = typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>).listen : undefined;
  const m = typeof listen === 'string' ? /:(\d+)$/.exec(listen) : undefined;
  if (typeof listen === 'number') return listen;
  return m ? Number(m[1]) : 6000;
}

/** The registry listener's URL from sluice's JSON log ("registry listening", {address}), on 127.0.0.1. */
function addressFromLog(log: string): string | undefined {
  for (const line of log.split('\n')) {
    if (!line.includes('registry listening')) continue;
    const m = /"address":"(https?):\/\/[^"]*:(\d+)"/.exec(line);
    if (m) return `${m[1]}://127.0.0.1:${m[2]}`;
  }
  return undefined;
}

/** Runs the real CLI (`node dist/src/main.js ARGS`) to completion; never rejects for a non-zero exit. */
export function runSluice(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [SLUICE_MAIN, ...args], { env: opts.env, timeoutMs: opts.timeoutMs ?? 120_000 });
}
