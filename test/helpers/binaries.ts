// Finding and running the real external tools the integration suites drive
// (docker-registry, skopeo, containerd, ctr), and skipping loudly when they are absent.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const INSTALL_HINT = 'apt-get install -y docker-registry skopeo containerd';

/** Absolute path of an executable on PATH (plus the sbin dirs Debian puts runc in), or undefined. */
export function which(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/local/sbin', '/usr/sbin', '/sbin']);
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/**
 * True when every binary is installed. Otherwise prints a banner naming the suite and
 * the missing tools and returns false, for `describe.skipIf(!ok)`: a skip must be seen.
 * Under CI=true it throws instead: .ci/run installs the tools, so a skip there is a bug.
 */
export function requireBinaries(names: readonly string[], suite = 'integration suite'): boolean {
  const missing = names.filter((n) => which(n) === undefined);
  if (missing.length === 0) return true;
  if (process.env.CI === 'true') {
    throw new Error(`${suite} needs ${missing.join(', ')} (CI=true, so not skipping): ${INSTALL_HINT}`);
  }
  const bar = '!'.repeat(78);
  console.warn(
    `\n${bar}\n!!! SKIPPING ${suite}: missing ${missing.join(', ')}\n` +
      `!!! install with ${INSTALL_HINT}\n${bar}\n`,
  );
  return false;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Kill the process (SIGKILL) after this long; the result then has code 124 like timeout(1). */
  timeoutMs?: number;
}

/** Runs a command to completion without a shell; never rejects for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 180_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString() + (timedOut ? `\n[killed after ${opts.timeoutMs ?? 180_000} ms]` : '');
      resolve({ code: timedOut ? 124 : (code ?? (signal ? 128 : 1)), stdout: Buffer.concat(out).toString(), stderr });
    });
  });
}

/** Like run, but throws with the command line and its stderr when the exit code is not 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}
