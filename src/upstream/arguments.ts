// Checks on what a caller asks an upstream for (repository name, digest, reference) before anything is sent.
import { RegistryError } from '../oci/errors.js';
import { isDigestShape, isValidName, isValidTag } from '../oci/reference.js';

export function checkName(name: string): void {
  if (!isValidName(name)) throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`);
}

export function checkDigestShape(digest: string): void {
  if (!isDigestShape(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
}

export function checkRef(name: string, reference: string): string {
  checkName(name);
  if (!isValidTag(reference) && !isDigestShape(reference)) {
    throw new RegistryError('TAG_INVALID', `invalid reference ${JSON.stringify(reference)}`);
  }
  return reference;
}

export function refSuffix(reference: string): string {
  return reference.includes(':') ? `@${reference}` : `:${reference}`;
}
