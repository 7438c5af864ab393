// Table tests of the allowlist rule grammar, the matcher and signature tags, edits over the in-memory store, plus
// persistence and multi-process editing of the store file (two instances, then real child processes).

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Allowlist,
  AllowlistFileError,
  InvalidRulesError,
  Matcher,
  parseImageList,
  parseRule,
  RuleError,
  signatureSubject,
  type AllowlistStorage,
} from '../../src/policy/allowlist.js';
import { LockTimeoutError, openAllowlistFile } from '../../src/store/fs/allowlist-document.js';
import { memoryStateDocuments, MemoryStateData } from '../../src/store/memory/state.js';

const H1 = `sha256:${'a'.repeat(64)}`;
const H2 = `sha256:${'b'.repeat(64)}`;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-allowlist-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
let seq = 0;
const freshFile = (): string => join(dir, `case-${++seq}`, 'allowlist.json');
/** Where the rules' logic needs no file: the in-memory store's allowlist document. */
const inMemory = (): AllowlistStorage => memoryStateDocuments(new MemoryStateData()).allowlist;

describe('parseRule: normalisation to canonical text', () => {
  it.each([
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['busybox', 'docker.io/library/busybox'],
    ['docker.io/busybox', 'docker.io/library/busybox'],
    ['docker.io/library/busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['myuser/app', 'docker.io/myuser/app'],
    ['index.docker.io/alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['index.docker.io/myuser/app', 'docker.io/myuser/app'],
    ['registry-1.docker.io/library/alpine', 'docker.io/library/alpine'],
    ['ghcr.io/siderolabs/kubelet:v1.34.0', 'ghcr.io/siderolabs/kubelet:v1.34.0'],
    ['registry.k8s.io/pause:3.10', 'registry.k8s.io/pause:3.10'],
    ['localhost/app', 'localhost/app'],
    ['localhost:5000/team/app:1.0', 'localhost:5000/team/app:1.0'],
    ['MyReg.Example:5000/app', 'myreg.example:5000/app'],
    ['ghcr.io/x/y:*', 'ghcr.io/x/y'],
    [`ghcr.io/x/y@${H1}`, `ghcr.io/x/y@${H1}`],
    [`ghcr.io/x/y:v1@${H1}`, `ghcr.io/x/y:v1@${H1}`],
    ['ghcr.io/siderolabs/**', 'ghcr.io/siderolabs/**'],
    ['registry.k8s.io/kube-*:v1.34.*', 'registry.k8s.io/kube-*:v1.34.*'],
    ['docker.io/*', 'docker.io/library/*'],
    ['**', 'docker.io/**'],
    ['quay.io/a__b/c-d.e_f', 'quay.io/a__b/c-d.e_f'],
  ])('%s → %s', (input, text) => {
    expect(parseRule(input).text).toBe(text);
  });

  it('keys a tag@digest rule by its digest: the tag is kept for display only', () => {
    const spec = parseRule(`ghcr.io/x/y:v1@${H1}`);
    expect(spec).toMatchObject({ host: 'ghcr.io', name: 'x/y', tag: 'v1', digest: H1, key: `ghcr.io/x/y@${H1}` });
  });
});

describe('parseRule: rejections say why', () => {
  it.each([
    ['', 'empty rule'],
    ['ghcr.io/foo bar:1', 'whitespace'],
    [' ghcr.io/x/y', 'whitespace'],
    ['bad_host.io/x', 'invalid host'],
    ['-bad.io/x', 'invalid host'],
    ['*.example.com/x', 'globs are not allowed in the host'],
    ['myreg.local:99999/x', 'invalid port'],
    ['ghcr.io/Siderolabs/kubelet', 'must be lowercase'],
    ['ghcr.io/x/y--', 'invalid repository name component'],
    ['ghcr.io/x//y', 'empty path segment'],
    ['ghcr.io/', 'empty path segment'],
    ['ghcr.io/x/foo**', 'whole path segment'],
    ['ghcr.io/x/y:', 'empty tag'],
    ['ghcr.io/x/y:-bad', 'invalid tag'],
    ['ghcr.io/x/y:.bad', 'invalid tag'],
    [`ghcr.io/x/y:${'a'.repeat(129)}`, 'invalid tag'],
    ['ghcr.io/x/y:v**', 'use "*" in a tag'],
    [`ghcr.io/x/y:v*@${H1}`, 'plain tag'],
    ['ghcr.io/x/y@sha256:abc', 'got 3'],
    [`ghcr.io/x/y@sha256:${'a'.repeat(63)}`, 'got 63'],
    [`ghcr.io/x/y@sha256:${'A'.repeat(64)}`, 'lowercase hex'],
    [`ghcr.io/x/y@sha512:${'a'.repeat(128)}`, 'only sha256'],
    ['ghcr.io/x/y@', 'empty digest'],
    [`a@${H1}@${H2}`, 'more than one "@"'],
    [`ghcr.io/${'a'.repeat(250)}`, 'longer than 255'],
  ])('%j is refused (%s)', (input, reason) => {
    let caught: unknown;
    try {
      parseRule(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(RuleError);
    expect((caught as RuleError).reason).toContain(reason);
    expect((caught as RuleError).message).toContain(JSON.stringify(input));
  });
});

const matcherOf = (rules: string[]): Matcher<string> =>
  new Matcher(rules.map((text) => ({ spec: parseRule(text), record: text })));

describe('matcher: tags', () => {
  // [rule, host, name, tag, allowed]
  it.each<[string, string, string, string, boolean]>([
    ['ghcr.io/siderolabs/kubelet:v1.34.0', 'ghcr.io', 'siderolabs/kubelet', 'v1.34.0', true],
    ['ghcr.io/siderolabs/kubelet:v1.34.0', 'ghcr.io', 'siderolabs/kubelet', 'v1.35.0', false],
    ['ghcr.io/siderolabs/kubelet:v1.34.0', 'ghcr.io', 'siderolabs/kubelet-x', 'v1.34.0', false],
    ['ghcr.io/siderolabs/kubelet:v1.34.0', 'quay.io', 'siderolabs/kubelet', 'v1.34.0', false],
    ['registry.k8s.io/pause', 'registry.k8s.io', 'pause', '3.10', true],
    ['registry.k8s.io/pause', 'registry.k8s.io', 'pause2', '3.10', false],
    [`ghcr.io/x/y@${H1}`, 'ghcr.io', 'x/y', 'v1', false],
    [`ghcr.io/x/y:v1@${H1}`, 'ghcr.io', 'x/y', 'v1', false],
    ['registry.k8s.io/kube-*:v1.34.0', 'registry.k8s.io', 'kube-apiserver', 'v1.34.0', true],
    ['registry.k8s.io/kube-*:v1.34.0', 'registry.k8s.io', 'kube-proxy', 'v1.34.0', true],
    ['registry.k8s.io/kube-*:v1.34.0', 'registry.k8s.io', 'kube-proxy', 'v1.33.0', false],
    ['registry.k8s.io/kube-*:v1.34.0', 'registry.k8s.io', 'coredns/coredns', 'v1.34.0', false],
    ['registry.k8s.io/kube-*:v1.34.0', 'registry.k8s.io', 'kube-a/b', 'v1.34.0', false],
    ['ghcr.io/siderolabs/*', 'ghcr.io', 'siderolabs/kubelet', 'anything', true],
    ['ghcr.io/siderolabs/*', 'ghcr.io', 'siderolabs/a/b', 'v1', false],
    ['ghcr.io/siderolabs/*', 'ghcr.io', 'siderolabs', 'v1', false],
    ['ghcr.io/x/y:v1.34.*', 'ghcr.io', 'x/y', 'v1.34.0', true],
    ['ghcr.io/x/y:v1.34.*', 'ghcr.io', 'x/y', 'v1.35.0', false],
    ['ghcr.io/x/y:*-alpine', 'ghcr.io', 'x/y', '3.20-alpine', true],
    ['ghcr.io/x/y:*-alpine', 'ghcr.io', 'x/y', '3.20', false],
    ['ghcr.io/siderolabs/**', 'ghcr.io', 'siderolabs/kubelet', 'v1', true],
    ['ghcr.io/siderolabs/**', 'ghcr.io', 'siderolabs/a/b/c', 'v1', true],
    ['ghcr.io/siderolabs/**', 'ghcr.io', 'siderolabs', 'v1', false],
    ['ghcr.io/siderolabs/**', 'ghcr.io', 'other/kubelet', 'v1', false],
    ['quay.io/org/**/app:v1', 'quay.io', 'org/app', 'v1', true],
    ['quay.io/org/**/app:v1', 'quay.io', 'org/a/b/app', 'v1', true],
    ['quay.io/org/**/app:v1', 'quay.io', 'org/a/b/other', 'v1', false],
    ['quay.io/**/app', 'quay.io', 'app', 'v1', true],
    ['quay.io/**/app', 'quay.io', 'x/y/app', 'v1', true],
    ['**', 'docker.io', 'library/alpine', '3.20', true],
    ['**', 'ghcr.io', 'x/y', 'v1', false],
    ['myreg.local:5000/team/app:1.0', 'myreg.local:5000', 'team/app', '1.0', true],
    ['myreg.local:5000/team/app:1.0', 'MyReg.Local:5000', 'team/app', '1.0', true],
    ['myreg.local:5000/team/app:1.0', 'myreg.local', 'team/app', '1.0', false],
    ['busybox:1.36', 'docker.io', 'library/busybox', '1.36', true],
    ['busybox:1.36', 'index.docker.io', 'library/busybox', '1.36', true],
    ['busybox:1.36', 'docker.io', 'busybox', '1.36', false],
    ['docker.io/busybox', 'docker.io', 'library/busybox', 'latest', true],
    ['myuser/app', 'docker.io', 'myuser/app', 'v9', true],
    ['index.docker.io/myuser/app:1', 'docker.io', 'myuser/app', '1', true],
  ])('%s: %s %s:%s → %s', (rule, host, name, tag, allowed) => {
    expect(matcherOf([rule]).matchTag(host, name, tag) !== undefined).toBe(allowed);
  });

  it('prefers the exact rule record and reports which rule allowed', () => {
    const m = matcherOf(['ghcr.io/x/**', 'ghcr.io/x/y:v1']);
    expect(m.matchTag('ghcr.io', 'x/y', 'v1')).toBe('ghcr.io/x/y:v1');
    expect(m.matchTag('ghcr.io', 'x/y', 'v2')).toBe('ghcr.io/x/**');
  });

  it('filters a repository’s tags with tagRulesFor', () => {
    const m = matcherOf(['ghcr.io/x/y:v1', 'ghcr.io/x/y:v2.*', 'ghcr.io/x/*:latest', `ghcr.io/x/y@${H1}`]);
    const allowed = m.tagRulesFor('ghcr.io', 'x/y');
    expect(['v1', 'v2.1', 'v3', 'latest', 'v10'].filter(allowed)).toEqual(['v1', 'v2.1', 'latest']);
    expect(['a', 'b'].filter(matcherOf(['ghcr.io/x/*']).tagRulesFor('ghcr.io', 'x/y'))).toEqual(['a', 'b']);
    expect(['a'].filter(m.tagRulesFor('ghcr.io', 'z/y'))).toEqual([]);
  });
});

describe('matcher: digests and repositories', () => {
  // [rules, host, name, allowsAnyTag, pinned digests, matchesRepository]
  it.each<[string[], string, string, boolean, string[], boolean]>([
    [['ghcr.io/x/y:v1'], 'ghcr.io', 'x/y', false, [], true],
    [['ghcr.io/x/y'], 'ghcr.io', 'x/y', true, [], true],
    [['ghcr.io/x/*'], 'ghcr.io', 'x/y', true, [], true],
    [['ghcr.io/x/*:v1'], 'ghcr.io', 'x/y', false, [], true],
    [[`ghcr.io/x/y@${H1}`], 'ghcr.io', 'x/y', false, [H1], true],
    [[`ghcr.io/x/y:v1@${H1}`, `ghcr.io/x/y@${H2}`], 'ghcr.io', 'x/y', false, [H1, H2], true],
    [[`ghcr.io/x/*@${H2}`], 'ghcr.io', 'x/y', false, [H2], true],
    [[`ghcr.io/x/y@${H1}`], 'ghcr.io', 'x/z', false, [], false],
    [['ghcr.io/x/y'], 'ghcr.io', 'x/y/z', false, [], false],
    [['docker.io/**'], 'docker.io', 'library/alpine', true, [], true],
  ])('%j on %s/%s', (rules, host, name, anyTag, pinned, repo) => {
    const m = matcherOf(rules);
    expect(m.allowsAnyTag(host, name)).toBe(anyTag);
    expect(m.pinnedDigests(host, name).sort()).toEqual(pinned);
    for (const d of [H1, H2]) expect(m.isDigestPinned(host, name, d)).toBe(pinned.includes(d));
    expect(m.matchesRepository(host, name)).toBe(repo);
  });
});

describe('signatureSubject', () => {
  it.each<[string, string | undefined]>([
    [`sha256-${'a'.repeat(64)}`, H1],
    [`sha256-${'a'.repeat(64)}.sig`, H1],
    [`sha256-${'a'.repeat(64)}.att`, H1],
    [`sha256-${'a'.repeat(64)}.sbom`, H1],
    [`sha256-${'a'.repeat(63)}.sig`, undefined],
    [`sha256-${'A'.repeat(64)}`, undefined],
    [`sha256-${'a'.repeat(64)}.foo`, undefined],
    ['v1.34.0', undefined],
  ])('%s → %s', (tag, subject) => {
    expect(signatureSubject(tag)).toBe(subject);
  });
});

describe('parseImageList', () => {
  it('turns talosctl images output into exact rules', () => {
    const text = [
      '# talosctl images default',
      'ghcr.io/siderolabs/kubelet:v1.34.0',
      'registry.k8s.io/pause:3.10   ',
      '',
      'registry.k8s.io/coredns/coredns:v1.12.1\r',
      'gcr.io/etcd-development/etcd:v3.6.4',
      'ghcr.io/siderolabs/flannel:v0.27.2  # CNI',
      'ghcr.io/siderolabs/install-cni:v1.11.0',
      'registry.k8s.io/kube-apiserver:v1.34.0',
      'ghcr.io/siderolabs/installer:v1.11.0',
      'ghcr.io/siderolabs/installer:v1.11.0',
      `ghcr.io/siderolabs/talos:v1.11.0@${H1}`,
      'busybox:1.36',
      'Not/Valid',
    ].join('\n');
    const { rules, errors } = parseImageList(text);
    expect(rules).toEqual([
      'ghcr.io/siderolabs/kubelet:v1.34.0',
      'registry.k8s.io/pause:3.10',
      'registry.k8s.io/coredns/coredns:v1.12.1',
      'gcr.io/etcd-development/etcd:v3.6.4',
      'ghcr.io/siderolabs/flannel:v0.27.2',
      'ghcr.io/siderolabs/install-cni:v1.11.0',
      'registry.k8s.io/kube-apiserver:v1.34.0',
      'ghcr.io/siderolabs/installer:v1.11.0',
      `ghcr.io/siderolabs/talos:v1.11.0@${H1}`,
      'docker.io/library/busybox:1.36',
    ]);
    expect(errors).toEqual([{ line: 14, text: 'Not/Valid', reason: expect.stringContaining('lowercase') }]);
  });
});

// Real output formats (cmd/talosctl/cmd/talos/image.go): `images k8s-bundle` (alias `default`, Talos 1.11+) prints
// flannel, coredns, etcd, pause, kube-apiserver, -controller-manager, -scheduler, -proxy, kubelet; `images
// talos-bundle [--extensions --overlays]` the installer, installer-base, imager, talos, talosctl-all, overlays and
// extensions by tag, then sorted `repo:tag@sha256:…` lines; older `images default` (Talos ≤ 1.10) one list of tags.
describe('parseImageList: talosctl images output as printed', () => {
  const pin = (n: number): string => `sha256:${String(n).repeat(64).slice(0, 64)}`;
  const k8sBundle = [
    'ghcr.io/siderolabs/flannel:v0.27.4',
    'registry.k8s.io/coredns/coredns:v1.12.4',
    'registry.k8s.io/etcd:v3.6.5-0',
    'registry.k8s.io/pause:3.10',
    'registry.k8s.io/kube-apiserver:v1.34.1',
    'registry.k8s.io/kube-controller-manager:v1.34.1',
    'registry.k8s.io/kube-scheduler:v1.34.1',
    'registry.k8s.io/kube-proxy:v1.34.1',
    'ghcr.io/siderolabs/kubelet:v1.34.1',
  ];
  const talosTags = ['installer', 'installer-base', 'imager', 'talos', 'talosctl-all', 'overlays', 'extensions'].map((r) => `ghcr.io/siderolabs/${r}:v1.12.0`);
  const talosPins = [
    `ghcr.io/siderolabs/gvisor:20250505.0@${pin(1)}`,
    `ghcr.io/siderolabs/iscsi-tools:v0.2.0@${pin(2)}`,
    `ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5@${pin(3)}`,
    `ghcr.io/siderolabs/util-linux-tools:2.41.1@${pin(4)}`,
  ];
  const olderDefault = [
    'ghcr.io/siderolabs/flannel:v0.22.1',
    'ghcr.io/siderolabs/install-cni:v1.5.0',
    'docker.io/coredns/coredns:1.10.1',
    'gcr.io/etcd-development/etcd:v3.5.9',
    'registry.k8s.io/kube-apiserver:v1.28.0',
    'registry.k8s.io/kube-controller-manager:v1.28.0',
    'registry.k8s.io/kube-scheduler:v1.28.0',
    'registry.k8s.io/kube-proxy:v1.28.0',
    'ghcr.io/siderolabs/kubelet:v1.28.0',
    'ghcr.io/siderolabs/installer:v1.5.0',
    'registry.k8s.io/pause:3.8',
  ];
  const printed = (lines: string[]): string => lines.join('\n') + '\n';
  // What an operator's saved file may add: a comment, CRLF, trailing blanks, blank lines, a repeated line.
  const edited = (lines: string[]): string => `# saved list\r\n\r\n${lines.map((l) => `${l} \t`).join('\r\n')}\r\n${lines[0] ?? ''}\r\n\r\n`;

  it.each([
    ['k8s-bundle', k8sBundle],
    ['talos-bundle --extensions --overlays', [...talosTags, ...talosPins]],
    ['default (Talos <= 1.10)', olderDefault],
  ])('%s: exact rules, in order, pins kept, whether as printed or edited', (_what, lines) => {
    for (const text of [printed(lines), edited(lines)]) {
      const { rules, errors } = parseImageList(text);
      expect(errors).toEqual([]);
      expect(rules).toEqual(lines);
      for (const r of rules) {
        const spec = parseRule(r);
        expect(spec.nameGlob).toBe(false);
        expect(spec.tag).toBeDefined();
        expect(spec.digest !== undefined).toBe(r.includes('@'));
      }
    }
  });

  it('a pinned line gives a digest rule (the tag kept for display) that allows the digest and not the tag', () => {
    const m = new Matcher(parseImageList(printed(talosPins)).rules.map((r) => ({ spec: parseRule(r), record: r })));
    expect(m.isDigestPinned('ghcr.io', 'siderolabs/gvisor', pin(1))).toBe(true);
    expect(m.matchTag('ghcr.io', 'siderolabs/gvisor', '20250505.0')).toBeUndefined();
  });
});

describe('Allowlist persistence', () => {
  const clock = (): Date => new Date('2025-01-02T03:04:05.000Z');

  it('add and remove survive a reopen, with who/when/why', async () => {
    const file = freshFile();
    const a = await openAllowlistFile(file, [], { now: clock });
    const res = await a.add(['busybox:1.36', 'ghcr.io/siderolabs/**'], { by: 'alice', note: 'upgrade' });
    expect(res.added.map((r) => r.rule)).toEqual(['docker.io/library/busybox:1.36', 'ghcr.io/siderolabs/**']);
    expect(res.existing).toEqual([]);
    const b = await openAllowlistFile(file);
    expect(b.list()).toEqual([
      { rule: 'docker.io/library/busybox:1.36', note: 'upgrade', addedBy: 'alice', addedAt: '2025-01-02T03:04:05.000Z' },
      { rule: 'ghcr.io/siderolabs/**', note: 'upgrade', addedBy: 'alice', addedAt: '2025-01-02T03:04:05.000Z' },
    ]);
    expect(b.matchTag('docker.io', 'library/busybox', '1.36')?.addedBy).toBe('alice');
    expect(await b.remove(['docker.io/busybox:1.36', 'ghcr.io/nope'])).toEqual({
      removed: ['docker.io/library/busybox:1.36'],
      missing: ['ghcr.io/nope'],
    });
    expect(b.matchTag('docker.io', 'library/busybox', '1.36')).toBeUndefined();
    const c = await openAllowlistFile(file);
    expect(c.list().map((r) => r.rule)).toEqual(['ghcr.io/siderolabs/**']);
    const names = await readdir(join(file, '..'));
    expect(names.sort()).toEqual(['allowlist.json']); // no temp file, no lock left behind
  });

  it('a duplicate canonical rule is a no-op that keeps the first metadata', async () => {
    const a = await Allowlist.open(inMemory());
    await a.add(['busybox:1.36'], { by: 'alice', note: 'first' });
    const res = await a.add(['docker.io/library/busybox:1.36', 'docker.io/busybox:1.36'], { by: 'bob', note: 'second' });
    expect(res).toEqual({ added: [], existing: ['docker.io/library/busybox:1.36', 'docker.io/library/busybox:1.36'] });
    expect(a.list()).toMatchObject([{ addedBy: 'alice', note: 'first' }]);
  });

  it('removes a tag@digest rule by its digest form', async () => {
    const a = await Allowlist.open(inMemory());
    await a.add([`ghcr.io/x/y:v1@${H1}`], { by: 't' });
    expect(a.isDigestPinned('ghcr.io', 'x/y', H1)).toBe(true);
    expect((await a.add([`ghcr.io/x/y@${H1}`], { by: 't' })).existing).toEqual([`ghcr.io/x/y@${H1}`]);
    expect(await a.remove([`ghcr.io/x/y@${H1}`])).toEqual({ removed: [`ghcr.io/x/y:v1@${H1}`], missing: [] });
    expect(a.isDigestPinned('ghcr.io', 'x/y', H1)).toBe(false);
  });

  it('add is all-or-nothing and lists every invalid rule', async () => {
    const file = freshFile();
    const a = await openAllowlistFile(file);
    await a.add(['ghcr.io/x/y:v1'], { by: 't' });
    const before = await readFile(file, 'utf8');
    const err = await a.add(['ghcr.io/ok/ok:1', 'BAD/x', 'ghcr.io/x:'], { by: 't' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidRulesError);
    expect((err as InvalidRulesError).errors.map((e) => e.input)).toEqual(['BAD/x', 'ghcr.io/x:']);
    expect((err as Error).message).toContain('lowercase');
    expect(a.list().map((r) => r.rule)).toEqual(['ghcr.io/x/y:v1']);
    expect(await readFile(file, 'utf8')).toBe(before);
  });

  it('bumps version and notifies listeners on every change, not on no-ops', async () => {
    const a = await Allowlist.open(inMemory());
    const seen: number[] = [];
    const off = a.onChange((v) => seen.push(v));
    const v0 = a.version;
    await a.add(['ghcr.io/x/y'], { by: 't' });
    await a.add(['ghcr.io/x/y'], { by: 't' });
    await a.remove(['ghcr.io/x/y']);
    off();
    await a.add(['ghcr.io/x/z'], { by: 't' });
    expect(seen).toEqual([v0 + 1, v0 + 2]);
    expect(a.version).toBe(v0 + 3);
  });

  it('merges seed rules from config, keeping operator metadata for rules already present', async () => {
    const storage = inMemory();
    const a = await Allowlist.open(storage);
    await a.add(['busybox:1.36'], { by: 'alice' });
    const b = await Allowlist.open(storage, ['docker.io/busybox:1.36', 'registry.k8s.io/pause:3.10']);
    expect(b.list()).toMatchObject([
      { rule: 'docker.io/library/busybox:1.36', addedBy: 'alice' },
      { rule: 'registry.k8s.io/pause:3.10', addedBy: 'config' },
    ]);
    expect((await Allowlist.open(storage)).list()).toHaveLength(2);
    await expect(Allowlist.open(storage, ['Bad/Seed'])).rejects.toBeInstanceOf(InvalidRulesError);
  });

  const record = (rule: string): object => ({ rule, addedBy: 'a', addedAt: '2025-01-01T00:00:00Z' });
  it.each<[string, string, string]>([
    ['bad JSON', '{"rules": [', 'JSON'],
    ['an empty file', '', 'JSON'],
    ['null', 'null', 'contains null'],
    ['an array', '[]', 'expected a JSON object'],
    ['rules not a list', '{"rules": 5}', '"rules" must be an array'],
    ['a wrong version', JSON.stringify({ version: 7, rules: [] }), 'unsupported version 7'],
    ['a rule that no longer parses', JSON.stringify({ rules: [record('ghcr.io/x/y'), record('BAD/x')] }), 'rules[1].rule "BAD/x": repository names must be lowercase'],
    ['a record without addedAt', JSON.stringify({ rules: [{ rule: 'ghcr.io/x/y', addedBy: 'a' }] }), 'rules[0].addedAt'],
  ])('refuses to open a file with %s, naming the file and the problem', async (_what, content, problem) => {
    const file = freshFile();
    await mkdir(join(file, '..'), { recursive: true });
    await writeFile(file, content);
    const err = await openAllowlistFile(file, ['ghcr.io/seed/x']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AllowlistFileError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain(problem);
    expect(await readFile(file, 'utf8')).toBe(content); // untouched
  });

  it('reload picks up another writer’s edits, and a broken file keeps the current list', async () => {
    const file = freshFile();
    const a = await openAllowlistFile(file);
    const b = await openAllowlistFile(file);
    await b.add(['ghcr.io/x/y:v1'], { by: 'cli' });
    expect(a.matchTag('ghcr.io', 'x/y', 'v1')).toBeUndefined();
    await a.reload();
    expect(a.matchTag('ghcr.io', 'x/y', 'v1')?.addedBy).toBe('cli');
    await writeFile(file, '{oops');
    await expect(a.reload()).rejects.toBeInstanceOf(AllowlistFileError);
    expect(a.list()).toHaveLength(1);
    await expect(a.add(['ghcr.io/q/q'], { by: 't' })).rejects.toBeInstanceOf(AllowlistFileError);
  });
});

describe('Allowlist locking', () => {
  const deadPid = async (): Promise<number> => {
    const child = spawn(process.execPath, ['-e', '']);
    const pid = child.pid ?? 0;
    await new Promise((resolve) => child.on('exit', resolve));
    return pid;
  };
  const writeLock = async (file: string, pid: number, time: Date): Promise<void> => {
    await mkdir(join(file, '..'), { recursive: true });
    await writeFile(`${file}.lock`, JSON.stringify({ pid, time: time.toISOString(), id: 'x' }));
  };

  it('breaks a lock whose pid is dead', async () => {
    const file = freshFile();
    await writeLock(file, await deadPid(), new Date());
    const a = await openAllowlistFile(file, ['ghcr.io/x/y'], { lockTimeoutMs: 5000 });
    expect(a.list()).toHaveLength(1);
    expect(await readdir(join(file, '..'))).toEqual(['allowlist.json']);
  });

  it('breaks a lock older than the stale limit even if its pid lives', async () => {
    const file = freshFile();
    await writeLock(file, process.pid, new Date(Date.now() - 60_000));
    expect((await openAllowlistFile(file, ['ghcr.io/x/y'])).list()).toHaveLength(1);
  });

  it('gives up on a live, fresh lock after the timeout, naming the holder', async () => {
    const file = freshFile();
    await writeLock(file, process.pid, new Date());
    const err = await openAllowlistFile(file, [], { lockTimeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain(`pid ${process.pid}`);
  });

  it('100 concurrent adds from two instances on one file leave exactly 100 rules', async () => {
    const file = freshFile();
    const server = await openAllowlistFile(file);
    const cli = await openAllowlistFile(file);
    await Promise.all(
      Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? server : cli).add([`ghcr.io/c/r${i}:v1`], { by: `w${i}` })),
    );
    const reopened = await openAllowlistFile(file);
    expect(reopened.list()).toHaveLength(100);
    await server.reload();
    expect(server.list()).toHaveLength(100);
  });

  it('real processes (4 children + this one) adding concurrently lose no edit', async () => {
    const moduleUrl = await compileForChildren();
    const child = join(dir, 'child.mjs');
    await writeFile(
      child,
      [
        `import { openAllowlistFile } from ${JSON.stringify(moduleUrl)};`,
        'const [file, prefix, count] = process.argv.slice(2);',
        'const list = await openAllowlistFile(file);',
        'await Promise.all(Array.from({ length: Number(count) }, (_, i) => list.add([`ghcr.io/${prefix}/r${i}:v1`], { by: prefix })));',
      ].join('\n'),
    );
    const file = freshFile();
    const parent = await openAllowlistFile(file);
    const exits = ['p1', 'p2', 'p3', 'p4'].map((prefix) => {
      const proc = spawn(process.execPath, [child, file, prefix, '20'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      return new Promise<string>((resolve) => proc.on('exit', (code) => resolve(`${code}${stderr}`)));
    });
    const own = Array.from({ length: 20 }, (_, i) => parent.add([`ghcr.io/parent/r${i}:v1`], { by: 'parent' }));
    await Promise.all(own);
    expect(await Promise.all(exits)).toEqual(['0', '0', '0', '0']);
    const rules = (await openAllowlistFile(file)).list().map((r) => r.rule);
    expect(rules).toHaveLength(100);
    expect(new Set(rules).size).toBe(100);
  });
});

/** The built module opening an allowlist on a file (`npm test` builds first), as a file URL the children import. */
function compileForChildren(): string {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  return pathToFileURL(join(root, 'dist', 'src', 'store', 'fs', 'allowlist-document.js')).href;
}
