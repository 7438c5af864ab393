// What a build or a release is made from: the checkout's root, package.json, and the git commit (its id and its
// date, which stamps every file of a release so that two runs from one commit give the same bytes).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout: this module is dist/src/release/source.js. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface PackageJson {
  name: string;
  version: string;
  description?: string;
  license?: string;
  engines?: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

export function readPackageJson(root = REPO_ROOT): PackageJson {
  return JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;
}

function git(root: string, args: string[]): string | undefined {
  try {
    return execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

export interface SourceCommit {
  /** The commit id, with `-dirty` when tracked files differ from it; `unknown` outside a git checkout. */
  revision: string;
  /** The commit's date in seconds since the epoch (SOURCE_DATE_EPOCH wins when set). */
  epochSeconds: number;
}

export function sourceCommit(root = REPO_ROOT): SourceCommit {
  const id = git(root, ['rev-parse', 'HEAD']);
  const dirty = id !== undefined && (git(root, ['status', '--porcelain', '--untracked-files=no']) ?? '') !== '';
  const fromEnv = Number(process.env.SOURCE_DATE_EPOCH);
  const committed = Number(git(root, ['show', '-s', '--format=%ct', 'HEAD']));
  const epochSeconds = Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : Number.isInteger(committed) && committed > 0 ? committed : 0;
  return { revision: id === undefined ? 'unknown' : dirty ? `${id}-dirty` : id, epochSeconds };
}

export interface BuildInfo {
  version: string;
  revision: string;
}

export function buildInfo(root = REPO_ROOT): BuildInfo {
  return { version: readPackageJson(root).version, revision: sourceCommit(root).revision };
}
