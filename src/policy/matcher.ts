// The compiled allowlist: answers "does a rule allow host/name:tag or @digest" with a Map lookup for
// exact rules and precompiled RegExps for globs; plus the subject of a signature tag. Pure.

import { canonicalHost, type RuleSpec } from './rules.js';

interface Rule<T> {
  spec: RuleSpec;
  record: T;
  /** Compiled tag glob; undefined for a plain tag or no tag. */
  tagRe?: RegExp;
}

interface GlobRule<T> extends Rule<T> {
  nameRe: RegExp;
}

/** Everything the exact (non-glob) rules say about one repository. */
interface RepoRules<T> {
  anyTag?: T;
  tags: Map<string, T>;
  tagGlobs: Rule<T>[];
  digests: Map<string, T>;
}

/** The tag rules of one repository (Matcher.namedTags). */
export interface TagRules {
  anyTag: boolean;
  exact: Set<string>;
  patterns: RegExp[];
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** `*` matches within one path segment, `**` any number of whole segments (a trailing `/**` at least one). */
export function nameGlobToRegExp(name: string): RegExp {
  const segments = name.split('/');
  let source = '';
  let needSlash = false;
  segments.forEach((segment, i) => {
    if (segment === '**') {
      if (i === segments.length - 1) source += needSlash ? '(?:/[^/]+)+' : '[^/]+(?:/[^/]+)*';
      else source += needSlash ? '/(?:[^/]+/)*' : '(?:[^/]+/)*';
      needSlash = false;
      return;
    }
    const body = segment === '*' ? '[^/]+' : segment.split('*').map(escapeRe).join('[^/]*');
    source += (needSlash ? '/' : '') + body;
    needSlash = true;
  });
  return new RegExp(`^${source}$`);
}

export function tagGlobToRegExp(tag: string): RegExp {
  return new RegExp(`^${tag.split('*').map(escapeRe).join('.*')}$`);
}

/** `sha256-<hex>`, `.sig`, `.att`, `.sbom` (cosign's tag scheme) → the subject digest `sha256:<hex>`. */
export function signatureSubject(tag: string): string | undefined {
  const m = /^sha256-([a-f0-9]{64})(?:\.sig|\.att|\.sbom)?$/.exec(tag);
  return m === null ? undefined : `sha256:${m[1]}`;
}

export class Matcher<T> {
  private readonly exact = new Map<string, RepoRules<T>>();
  private readonly globs = new Map<string, GlobRule<T>[]>();

  constructor(rules: Iterable<{ spec: RuleSpec; record: T }>) {
    for (const { spec, record } of rules) {
      const tagRe = spec.digest === undefined && spec.tag?.includes('*') ? tagGlobToRegExp(spec.tag) : undefined;
      if (spec.nameGlob) {
        const list = this.globs.get(spec.host) ?? [];
        list.push({ spec, record, tagRe, nameRe: nameGlobToRegExp(spec.name) });
        this.globs.set(spec.host, list);
        continue;
      }
      const key = `${spec.host}/${spec.name}`;
      let repo = this.exact.get(key);
      if (repo === undefined) {
        repo = { tags: new Map(), tagGlobs: [], digests: new Map() };
        this.exact.set(key, repo);
      }
      if (spec.digest !== undefined) {
        if (!repo.digests.has(spec.digest)) repo.digests.set(spec.digest, record);
      } else if (spec.tag === undefined) repo.anyTag ??= record;
      else if (tagRe !== undefined) repo.tagGlobs.push({ spec, record, tagRe });
      else if (!repo.tags.has(spec.tag)) repo.tags.set(spec.tag, record);
    }
  }

  private globsFor(host: string, name: string): GlobRule<T>[] {
    const list = this.globs.get(host);
    return list === undefined ? [] : list.filter((g) => g.nameRe.test(name));
  }

  /** The first rule allowing `host/name:tag`; exact rules win over globs. Digest pins never allow a tag. */
  matchTag(host: string, name: string, tag: string): T | undefined {
    const h = canonicalHost(host);
    const repo = this.exact.get(`${h}/${name}`);
    if (repo !== undefined) {
      const hit = repo.tags.get(tag) ?? repo.anyTag ?? repo.tagGlobs.find((r) => r.tagRe?.test(tag))?.record;
      if (hit !== undefined) return hit;
    }
    const list = this.globs.get(h);
    if (list === undefined) return undefined;
    for (const g of list) {
      if (g.spec.digest !== undefined || !g.nameRe.test(name)) continue;
      if (g.spec.tag === undefined || (g.tagRe ? g.tagRe.test(tag) : g.spec.tag === tag)) return g.record;
    }
    return undefined;
  }

  /** A rule without tag or digest covers this repository: every tag and every digest in it is allowed. */
  allowsAnyTag(host: string, name: string): boolean {
    const h = canonicalHost(host);
    if (this.exact.get(`${h}/${name}`)?.anyTag !== undefined) return true;
    return this.globsFor(h, name).some((g) => g.spec.tag === undefined && g.spec.digest === undefined);
  }

  /** A predicate over this repository's tags (to filter tags/list), built once per call. */
  tagRulesFor(host: string, name: string): (tag: string) => boolean {
    const rules = this.namedTags(host, name);
    if (rules.anyTag) return () => true;
    return (tag) => rules.exact.has(tag) || rules.patterns.some((re) => re.test(tag));
  }

  /** What the tag rules of this repository name: every tag, or these exact tags and these tag globs. */
  namedTags(host: string, name: string): TagRules {
    const h = canonicalHost(host);
    const exact = new Set<string>();
    const patterns: RegExp[] = [];
    if (this.allowsAnyTag(h, name)) return { anyTag: true, exact, patterns };
    const repo = this.exact.get(`${h}/${name}`);
    for (const t of repo?.tags.keys() ?? []) exact.add(t);
    for (const r of repo?.tagGlobs ?? []) if (r.tagRe) patterns.push(r.tagRe);
    for (const g of this.globsFor(h, name)) {
      if (g.spec.digest !== undefined || g.spec.tag === undefined) continue;
      if (g.tagRe) patterns.push(g.tagRe);
      else exact.add(g.spec.tag);
    }
    return { anyTag: false, exact, patterns };
  }

  /** Digests pinned for this repository by `@sha256:` rules (exact or glob names). */
  pinnedDigests(host: string, name: string): string[] {
    const h = canonicalHost(host);
    const out = new Set(this.exact.get(`${h}/${name}`)?.digests.keys() ?? []);
    for (const g of this.globsFor(h, name)) if (g.spec.digest !== undefined) out.add(g.spec.digest);
    return [...out];
  }

  isDigestPinned(host: string, name: string, digest: string): boolean {
    const h = canonicalHost(host);
    if (this.exact.get(`${h}/${name}`)?.digests.has(digest) === true) return true;
    return this.globsFor(h, name).some((g) => g.spec.digest === digest);
  }

  /** Whether any rule at all could apply to this repository (to filter listings). */
  matchesRepository(host: string, name: string): boolean {
    const h = canonicalHost(host);
    return this.exact.has(`${h}/${name}`) || this.globsFor(h, name).length > 0;
  }
}
