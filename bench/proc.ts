// Child processes of the bench and what /proc says about them: spawn with logs to files, stop by PID,
// free loopback ports, bounded start-up polls, CPU ticks and resident memory of a process tree.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { open, readFile, readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

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

/** Stops every process this bench started that is still running (on exit, error or Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(2_000)));
}

/** Synchronous last resort for process 'exit': SIGKILL by PID, only our own children. */
export function killAllSync(): void {
  for (const p of live) if (p.running) p.child.kill('SIGKILL');
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion without a shell; never rejects for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

export async function runOk(cmd: string, args: readonly string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-3000)}${r.stdout.slice(-2000)}`);
  return r;
}

/** A loopback port that was free a moment ago. */
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

const CLK_TCK = 100;

/** The PID and every descendant (nginx's workers, for instance). */
export async function processTree(pid: number): Promise<number[]> {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i] ?? 0;
    const tasks = await readdir(`/proc/${p}/task`).catch(() => [] as string[]);
    for (const t of tasks) {
      const kids = await readFile(`/proc/${p}/task/${t}/children`, 'utf8').catch(() => '');
      for (const k of kids.split(/\s+/)) if (k !== '') out.push(Number(k));
    }
  }
  return out;
}

/** Whole-machine CPU time from the first line of /proc/stat, in seconds: busy (everything but idle and iowait) and steal. */
export function parseProcStat(text: string): { busySeconds: number; stealSeconds: number } {
  const f = (/^cpu\s+(.*)$/m.exec(text)?.[1] ?? '').trim().split(/\s+/).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return { busySeconds: (user + nice + system + irq + softirq) / CLK_TCK, stealSeconds: steal / CLK_TCK };
}

export async function machineCpu(): Promise<{ busySeconds: number; stealSeconds: number }> {
  return parseProcStat(await readFile('/proc/stat', 'utf8'));
}

export interface Measured<T> {
  value: T;
  wallSeconds: number;
  /** CPU seconds of the server's process tree. */
  serverCpuSeconds: number;
  /** CPU seconds of this (the harness) process: autocannon runs in it. */
  harnessCpuSeconds: number;
  /** CPU seconds the whole machine was busy, and stolen by the hypervisor. */
  machineBusySeconds: number;
  stealSeconds: number;
}

/** Runs `fn` and accounts for the CPU the server, the harness and the whole machine used meanwhile. */
export async function measure<T>(serverPid: number, fn: () => Promise<T>): Promise<Measured<T>> {
  const m0 = await machineCpu();
  const s0 = await treeCpuSeconds(serverPid);
  const h0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const wallSeconds = (performance.now() - t0) / 1000;
  const h = process.cpuUsage(h0);
  const serverCpuSeconds = (await treeCpuSeconds(serverPid)) - s0;
  const m1 = await machineCpu();
  return {
    value,
    wallSeconds,
    serverCpuSeconds,
    harnessCpuSeconds: (h.user + h.system) / 1e6,
    machineBusySeconds: m1.busySeconds - m0.busySeconds,
    stealSeconds: m1.stealSeconds - m0.stealSeconds,
  };
}

/** Cores kept busy by anything but the server, the harness and the client: other users of a shared box. */
export function backgroundCores(m: Measured<unknown>, clientCpuSeconds = 0): number {
  const own = m.serverCpuSeconds + m.harnessCpuSeconds + clientCpuSeconds;
  return m.wallSeconds > 0 ? Math.max(0, (m.machineBusySeconds - own) / m.wallSeconds) : 0;
}

/** user+system CPU seconds of one process, from /proc/PID/stat (fields 14 and 15). */
export function parseProcStatCpu(stat: string): number {
  // The command name (field 2) may contain spaces; fields after the last ')' are fixed.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

/** CPU seconds used so far by a process and all its descendants. */
export async function treeCpuSeconds(pid: number): Promise<number> {
  let total = 0;
  for (const p of await processTree(pid)) {
    const s = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (s) total += parseProcStatCpu(s);
  }
  return total;
}

/** A `VmRSS:` / `VmHWM:` style line of /proc/PID/status, in bytes. */
export function parseStatusKb(status: string, key: string): number | undefined {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
  return m ? Number(m[1]) * 1024 : undefined;
}

export async function memoryOf(pid: number): Promise<{ rssBytes: number; hwmBytes: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  return { rssBytes: parseStatusKb(s, 'VmRSS') ?? 0, hwmBytes: parseStatusKb(s, 'VmHWM') ?? 0 };
}

/** Resets the peak-RSS mark of a process (Linux ≥ 4.0, `echo 5 > clear_refs`); false when not permitted. */
export async function resetPeakRss(pid: number): Promise<boolean> {
  try {
    const fh = await open(`/proc/${pid}/clear_refs`, 'w');
    await fh.write('5');
    await fh.close();
    return true;
  } catch {
    return false;
  }
}

/** Samples VmRSS every `intervalMs` until stopped; returns the highest sample. */
export function pollRss(pid: number, intervalMs = 20): { stop(): Promise<number> } {
  let max = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const m = await memoryOf(pid).catch(() => undefined);
      if (m) max = Math.max(max, m.rssBytes);
      await delay(intervalMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return max;
    },
  };
}
