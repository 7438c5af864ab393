// `sluice version` / `sluice --version`: the release, the source revision it was built from (dist/build-info.json,
// written at build and release time), the Node.js runtime running it and the store format versions it reads.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, type ParsedArgs } from './args.js';
import { STORE_FORMAT_VERSION } from '../store/format.js';
import { DATABASE_SCHEMA_VERSION } from '../store/open.js';

/** dist/build-info.json beside dist/src/ (this module is dist/src/cli/version-command.js). */
const BUILD_INFO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build-info.json');

export interface VersionReport {
  version: string;
  revision: string;
  node: string;
  platform: string;
  storeFormat: number;
  postgresSchema: number;
}

export function versionReport(buildInfoFile = BUILD_INFO): VersionReport {
  let info: { version?: unknown; revision?: unknown } = {};
  try {
    info = JSON.parse(readFileSync(buildInfoFile, 'utf8')) as typeof info;
  } catch {
    // Not built by `npm run build` or `npm run release` (e.g. plain tsc): say so rather than guess.
  }
  return {
    version: typeof info.version === 'string' ? info.version : 'unknown',
    revision: typeof info.revision === 'string' ? info.revision : 'unknown',
    node: process.version,
    platform: `${process.platform}/${process.arch}`,
    storeFormat: STORE_FORMAT_VERSION,
    postgresSchema: DATABASE_SCHEMA_VERSION,
  };
}

export async function versionCommand(args: ParsedArgs): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('version takes no arguments');
  const r = versionReport();
  if (args.flags.get('json') === true) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return 0;
  }
  process.stdout.write(
    `sluice ${r.version}\nrevision ${r.revision}\nnode     ${r.node} (${r.platform})\n` +
      `store    format ${r.storeFormat}, PostgreSQL schema ${r.postgresSchema}\n`,
  );
  return 0;
}
