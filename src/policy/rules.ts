// The allowlist rule grammar: parsing, Docker Hub normalisation and canonical text,
// plus image-list import. Pure: matching lives in matcher.ts, persistence in allowlist.ts.

/** Why a rule was refused; `input` is the text as given, `reason` a sentence for the operator. */
export class RuleError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`invalid rule ${JSON.stringify(input)}: ${reason}`);
    this.name = 'RuleError';
  }
}

export interface RuleSpec {
  /** Canonical, normalised text: what is stored and shown (`docker.io/library/busybox:1.36`). */
  text: string;
  /** Identity for de-duplication and removal: `text`, except that `name:tag@digest` keys as `name@digest`. */
  key: string;
  /** Lower-case registry host, with port if any; never a glob. */
  host: string;
  /** Repository name; may contain `*` (within a segment) and `**` (whole segments, any depth). */
  name: string;
  /** Tag pattern (may contain `*`); undefined = any tag. Informational only when `digest` is set. */
  tag?: string;
  /** `sha256:<64 hex>`: the rule pins this digest. */
  digest?: string;
  /** True when `name` contains a glob. */
  nameGlob: boolean;
}

export const DOCKER_HUB = 'docker.io';
/** Host spellings that mean Docker Hub (same set as reference.ts, which this module may not import). */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

// OCI distribution spec, "pulling manifests": name components, tags and the sha256 digest form.
const NAME_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const SHA256 = /^sha256:[a-f0-9]{64}$/;
const HOST_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const HOST = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::([0-9]{1,5}))?$`);
const MAX_NAME_CHARS = 255;

/** Lower-cases a registry host and folds the Docker Hub aliases onto `docker.io`. */
export function canonicalHost(host: string): string {
  const lower = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(lower) ? DOCKER_HUB : lower;
}

/** Parses one rule; throws RuleError naming the first thing that is wrong. */
export function parseRule(input: string): RuleSpec {
  const fail = (reason: string): never => {
    throw new RuleError(input, reason);
  };
  if (input.length === 0) fail('empty rule');
  if (/\s/.test(input)) fail('contains whitespace');
  const at = input.indexOf('@');
  if (at !== -1 && input.indexOf('@', at + 1) !== -1) fail('more than one "@"');
  const digest = at === -1 ? undefined : parseDigest(input.slice(at + 1), fail);
  const rest = at === -1 ? input : input.slice(0, at);
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  const repo = colon === -1 ? rest : rest.slice(0, colon);
  let tag = colon === -1 ? undefined : rest.slice(colon + 1);
  if (tag !== undefined) {
    checkTag(tag, digest !== undefined, fail);
    if (tag === '*' && digest === undefined) tag = undefined; // `:*` means every tag, like no tag
  }
  const { host, name } = splitHost(repo, fail);
  const nameGlob = name.includes('*');
  const base = `${host}/${name}`;
  if (base.length > MAX_NAME_CHARS) fail(`name is longer than ${MAX_NAME_CHARS} characters`);
  const text = base + (tag === undefined ? '' : `:${tag}`) + (digest === undefined ? '' : `@${digest}`);
  const key = digest === undefined ? text : `${base}@${digest}`;
  return { text, key, host, name, tag, digest, nameGlob };
}

function parseDigest(digest: string, fail: (reason: string) => never): string {
  if (SHA256.test(digest)) return digest;
  if (digest === '') return fail('empty digest after "@"');
  if (!digest.startsWith('sha256:')) return fail('only sha256 digests are supported ("@sha256:<64 lowercase hex>")');
  const hex = digest.slice('sha256:'.length);
  if (!/^[a-f0-9]*$/.test(hex)) return fail('digest must be 64 lowercase hex characters after "sha256:"');
  return fail(`digest must be 64 lowercase hex characters after "sha256:", got ${hex.length}`);
}

function checkTag(tag: string, pinned: boolean, fail: (reason: string) => never): void {
  if (tag === '') fail('empty tag after ":"');
  if (tag.includes('**')) fail('"**" is only meaningful in the repository name; use "*" in a tag');
  if (pinned && tag.includes('*')) fail('a tag written with a digest must be a plain tag, not a glob');
  // A glob stands for at least one character, so checking it with `*` read as a letter is exact.
  if (!TAG.test(tag.replaceAll('*', 'a'))) {
    fail(`invalid tag ${JSON.stringify(tag)}: tags are 1-128 of [A-Za-z0-9_.-] and cannot start with "." or "-"`);
  }
}

/** Docker's rule: the first segment is a host when it has a "." or ":" or is "localhost". */
function splitHost(repo: string, fail: (reason: string) => never): { host: string; name: string } {
  if (repo === '') fail('empty repository name');
  const slash = repo.indexOf('/');
  const first = slash === -1 ? '' : repo.slice(0, slash);
  const hasHost = slash !== -1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  let host = DOCKER_HUB;
  let name = repo;
  if (hasHost) {
    if (first.includes('*')) fail('globs are not allowed in the host');
    const m = HOST.exec(first);
    if (m === null) fail(`invalid host ${JSON.stringify(first)}`);
    const port = m?.[1];
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) fail(`invalid port ${port} in host`);
    host = canonicalHost(first);
    name = repo.slice(slash + 1);
  }
  const segments = name.split('/');
  segments.forEach((segment) => checkNameSegment(segment, fail));
  // Docker Hub official images live under library/ (containerd always sends it).
  if (host === DOCKER_HUB && segments.length === 1 && segments[0] !== '**') name = `library/${name}`;
  return { host, name };
}

function checkNameSegment(segment: string, fail: (reason: string) => never): void {
  if (segment === '') fail('empty path segment in repository name');
  if (segment === '**') return;
  if (segment.includes('**')) fail('"**" must be a whole path segment (e.g. "ghcr.io/org/**")');
  if (segment !== segment.toLowerCase()) fail(`repository names must be lowercase (${JSON.stringify(segment)})`);
  if (!NAME_COMPONENT.test(segment.replaceAll('*', 'a'))) {
    fail(`invalid repository name component ${JSON.stringify(segment)}: must match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*`);
  }
}

export interface ImageListError {
  /** 1-based line number. */
  line: number;
  text: string;
  reason: string;
}

/**
 * One image reference (or rule) per line, as `talosctl images k8s-bundle` / `talos-bundle` (`repo:tag@sha256:` pins)
 * and the older `images default` print them; CRLF, trailing blanks, duplicates, blank lines and
 * `#` comments (whole-line or trailing) are ignored. Returns canonical rule texts, de-duplicated.
 */
export function parseImageList(text: string): { rules: string[]; errors: ImageListError[] } {
  const rules: string[] = [];
  const seen = new Set<string>();
  const errors: ImageListError[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const hash = raw.indexOf('#'); // "#" cannot occur in a reference
    const line = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (line === '') return;
    try {
      const spec = parseRule(line);
      if (!seen.has(spec.key)) {
        seen.add(spec.key);
        rules.push(spec.text);
      }
    } catch (err) {
      if (!(err instanceof RuleError)) throw err;
      errors.push({ line: index + 1, text: line, reason: err.reason });
    }
  });
  return { rules, errors };
}
