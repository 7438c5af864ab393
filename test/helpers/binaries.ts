// Finding and running the real external tools the integration suites drive
// (docker-registry, skopeo, containerd, ctr), and skipping loudly when they are absent. run/runOk are the test kit's.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export { run, runOk, type RunOptions, type RunResult } from '../kit/proc.js';

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

/**
 * True when running as root (network namespaces, `ctr run`). Otherwise a banner and false, for `describe.skipIf`;
 * under CI=true (where .ci/run runs as root) it throws instead.
 */
export function requireRoot(suite: string): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.CI === 'true') throw new Error(`${suite} needs root (CI=true, so not skipping)`);
  const bar = '!'.repeat(78);
  console.warn(`\n${bar}\n!!! SKIPPING ${suite}: needs root (network namespaces, containerd + runc)\n${bar}\n`);
  return false;
}
