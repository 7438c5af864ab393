// The site key: an ECDSA P-256 key pair sluice signs admitted images with. Written once by `sluice signing init`
// (private key mode 0600), read by every signing run; its id names it in bundles (publicKey hint) and annotations.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';

/** The site key or the trusted root cannot be used: a configuration problem, named with its file. */
export class SiteKeyError extends Error {}

export interface SiteKey {
  /** sha256 of the DER SubjectPublicKeyInfo, hex: the bundle's publicKey hint and the annotations' key id. */
  id: string;
  publicKeyPem: string;
  /** ECDSA-SHA256 over `data`, DER-encoded (what cosign and sigstore bundles carry). */
  sign(data: Buffer): Buffer;
  /** Whether `signature` is this key's over `data`. */
  verify(data: Buffer, signature: Buffer): boolean;
}

function siteKeyFrom(privateKey: KeyObject): SiteKey {
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new SiteKeyError('the site key must be an ECDSA P-256 private key (sluice signing init writes one)');
  }
  const publicKey = createPublicKey(privateKey);
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return {
    id: createHash('sha256').update(der).digest('hex'),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    sign: (data) => sign('sha256', data, privateKey),
    verify: (data, signature) => {
      try {
        return verify('sha256', data, publicKey, signature);
      } catch {
        return false;
      }
    },
  };
}

export async function loadSiteKey(file: string): Promise<SiteKey> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (e) {
    throw new SiteKeyError(`signing.key ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): create it with \`sluice signing init\``);
  }
  try {
    return siteKeyFrom(createPrivateKey(pem));
  } catch (e) {
    if (e instanceof SiteKeyError) throw new SiteKeyError(`signing.key ${file}: ${e.message}`);
    throw new SiteKeyError(`signing.key ${file} is not a PEM private key (${(e as Error).message})`);
  }
}

/**
 * Writes a new key pair: the private key (PKCS#8 PEM, mode 0600, never over an existing file) and the public key
 * beside it (`<file>.pub`). Returns the public key PEM.
 */
export async function writeSiteKey(file: string): Promise<SiteKey> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const key = siteKeyFrom(privateKey);
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await writeNew(file, pem, 0o600);
  await writeNew(`${file}.pub`, key.publicKeyPem, 0o644);
  return key;
}

async function writeNew(file: string, text: string, mode: number): Promise<void> {
  let fh;
  try {
    fh = await open(file, 'wx', mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SiteKeyError(code === 'EEXIST' ? `${file} exists already; a site key is never overwritten (move it away first)` : `${file} cannot be written (${code ?? (e as Error).message})`);
  }
  try {
    await fh.writeFile(text);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
