// The admin API's bearer token: created 0600 on first start, compared in constant time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError } from '../config/config.js';

const MIN_TOKEN_CHARS = 32;

/** Reads the admin token, creating it (32 random bytes, hex, mode 0600, folder 0700) when absent. */
export async function ensureAdminToken(file: string, configFile = ''): Promise<string> {
  let text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
    return undefined;
  });
  if (text === undefined) {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const fresh = randomBytes(32).toString('hex');
    // 'wx': two processes starting at once must not overwrite each other's token.
    const created = await writeFile(file, `${fresh}\n`, { mode: 0o600, flag: 'wx' }).then(
      () => true,
      (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
        return false;
      },
    );
    text = created ? fresh : await readFile(file, 'utf8');
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN_CHARS) {
    throw new ConfigError([`admin.tokenFile: ${file} holds ${token.length} characters; a token needs at least ${MIN_TOKEN_CHARS} (delete the file to have one generated)`], configFile);
  }
  return token;
}

export const digestOf = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time: both sides are hashed to equal length before timingSafeEqual. */
export function authorized(header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return m !== null && timingSafeEqual(digestOf(m[1] ?? ''), expected);
}
