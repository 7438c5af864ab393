// The images the allowlist admits that the store can name: an exact rule's image, and for a tag glob, an any-tag
// rule or a name glob, the stored tags it matches (signature tags are not images). Shared by signing runs.
import { nameGlobToRegExp, signatureSubject, tagGlobToRegExp } from '../policy/matcher.js';
import { parseRule } from '../policy/rules.js';
import type { Store } from '../store/store.js';

export interface AdmittedImage {
  rule: string;
  host: string;
  name: string;
  /** Tag or digest. */
  reference: string;
}

export async function admittedImages(store: Pick<Store, 'listTags' | 'repositories'>, rules: readonly string[]): Promise<AdmittedImage[]> {
  const out: AdmittedImage[] = [];
  for (const rule of rules) {
    const spec = parseRule(rule);
    const exact = spec.digest ?? (spec.tag !== undefined && !spec.tag.includes('*') ? spec.tag : undefined);
    if (!spec.nameGlob && exact !== undefined) {
      out.push({ rule, host: spec.host, name: spec.name, reference: exact });
      continue;
    }
    const nameRe = spec.nameGlob ? nameGlobToRegExp(spec.name) : undefined;
    const names = nameRe ? (await store.repositories()).filter((r) => r.host === spec.host && nameRe.test(r.name)).map((r) => r.name) : [spec.name];
    const tagRe = spec.tag === undefined ? undefined : tagGlobToRegExp(spec.tag);
    for (const name of names.sort()) {
      for (const tag of await store.listTags(spec.host, name)) {
        if (signatureSubject(tag) === undefined && (!tagRe || tagRe.test(tag))) out.push({ rule, host: spec.host, name, reference: tag });
      }
    }
  }
  return out;
}
