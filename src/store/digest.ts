// The one digest form the store accepts (sha256, lower-case hex) and its hex part, which names files and keys.
import { RegistryError } from '../oci/errors.js';

export const HEX_RE = /^[a-f0-9]{64}$/;

export function hexOf(digest: string): string {
  const hex = digest.startsWith('sha256:') ? digest.slice(7) : '';
  if (!HEX_RE.test(hex)) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { digest: digest.slice(0, 200) });
  return hex;
}
