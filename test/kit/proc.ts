// Child processes for tests and the bench: run a command to completion, spawn a long-running one with its
// output in a log file, stop it by PID, free loopback ports, and the bounded start-up poll.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { open, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the process (SIGKILL) after this long; the result then has code 124 like timeout(1). Default 300 s. */
  timeoutMs?: number;
}

/** Runs a command to completion without a shell; never rejects for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 300_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString() + (timedOut ? `\n[killed after ${timeoutMs} ms]` : '');
      resolve({ code: timedOut ? 124 : (code ?? (signal ? 128 : 1)), stdout: Buffer.concat(out).toString(), stderr });
    });
  });
}

/** Like run, but throws with the command line and the tail of its output when the exit code is not 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-3000)}${r.stdout.slice(-2000)}`);
  return r;
}

/** A loopback port that was free a moment ago (listen on 0, read it, close). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no free port');
  return addr.port;
}

export interface Proc {
  name: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  /** Resolves with the exit code (or signal name) when the process has exited. */
  exited: Promise<number | string>;
  readonly running: boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<number | string>;
  log(): Promise<string>;
}

const live = new Set<Proc>();

/** Spawns a long-running process with stdout and stderr appended to `logFile`. */
export async function startProc(name: string, cmd: string, args: readonly string[], logFile: string, opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Proc> {
  const fh = await open(logFile, 'a');
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', fh.fd, fh.fd] });
  await fh.close();
  let running = true;
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      resolve(code ?? signal ?? 'unknown');
    });
    child.once('error', (e) => {
      running = false;
      resolve(`spawn error: ${e.message}`);
    });
  });
  const proc: Proc = {
    name,
    pid: child.pid ?? -1,
    child,
    logFile,
    exited,
    get running() {
      return running;
    },
    async stop(graceMs = 5_000) {
      if (running) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => running && child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      live.delete(proc);
      return exited;
    },
    log: () => readFile(logFile, 'utf8').catch(() => ''),
  };
  live.add(proc);
  return proc;
}

/** Stops every process started here that is still running (on exit, error or Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(2_000)));
}

/** Synchronous last resort for process 'exit': SIGKILL by PID, only our own children. */
export function killAllSync(): void {
  for (const p of live) if (p.running) p.child.kill('SIGKILL');
}

/** Polls `url` until it answers with one of `ok` statuses; the one bounded wait by polling (process start). */
export async function waitForHttp(url: string, proc: Proc, opts: { timeoutMs?: number; intervalMs?: number; ok?: number[] } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  const ok = opts.ok ?? [200];
  while (Date.now() < deadline && proc.running) {
    const status = await fetch(url).then((r) => r.status, () => 0);
    if (ok.includes(status)) return;
    await delay(opts.intervalMs ?? 25);
  }
  const log = await proc.log();
  throw new Error(`${proc.name} did not answer ${url} (${proc.running ? 'still running' : 'exited'}):\n${log.slice(-3000)}`);
}
