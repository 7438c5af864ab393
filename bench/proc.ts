// What /proc says about the bench's processes: CPU ticks and resident memory of a process tree, the whole
// machine's busy time. Spawning and stopping them is test/kit/proc.ts.
import { open, readFile, readdir } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';

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
