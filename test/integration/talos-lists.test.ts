// Talos as it is today, end to end with a real docker-registry upstream holding images
// under Talos names: real containerd pulls `installer@sha256:…` (digest only) of a tag-ruled image through a real
// `sluice serve` on a cold store inside a window, and gets the fast closed-window 404 outside one; and the real CLI
// imports a `talosctl images talos-bundle` list as printed (tag lines, `repo:tag@sha256:` lines), then syncs it all.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { startContainerd, tempDir, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayoutOf, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { KiB } from '../kit/oci.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], 'test/integration/talos-lists.test.ts');

// What `talosctl images talos-bundle v1.12.0 --extensions --overlays` prints (cmd/talosctl/cmd/talos/image.go):
// the installer, installer-base, imager, talos, talosctl-all, overlays and extensions catalogues by tag, then
// each extension and overlay as `repo:tag@sha256:…`, sorted. A subset under the real names, small layers.
const TAG_IMAGES = [
  'ghcr.io/siderolabs/installer:v1.12.0',
  'ghcr.io/siderolabs/installer-base:v1.12.0',
  'ghcr.io/siderolabs/imager:v1.12.0',
  'ghcr.io/siderolabs/talos:v1.12.0',
  'ghcr.io/siderolabs/talosctl-all:v1.12.0',
  'ghcr.io/siderolabs/overlays:v1.12.0',
  'ghcr.io/siderolabs/extensions:v1.12.0',
];
const DIGEST_IMAGES = [
  'ghcr.io/siderolabs/gvisor:20250505.0',
  'ghcr.io/siderolabs/iscsi-tools:v0.2.0',
  'ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5',
];

describe.skipIf(!ok)('Talos image lists and digest-pinned pulls (real docker-registry, sluice, containerd)', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  const sluices: SluiceProcess[] = [];
  let containerd: Containerd | undefined;
  const image = (ref: string): TestImage => layout.images.find((i) => i.ref === ref)!;
  const config = (windows: 'always' | 'never', allowlist: string[] = []): string =>
    sluiceConfigYaml('./data', { windows, allowlist, upstreams: { 'ghcr.io': { url: registry.url } } });

  beforeAll(async () => {
    work = await tempDir('talos-lists');
    const specs = [
      ...TAG_IMAGES.map((ref, i) => ({ ref, kind: i === 0 ? 'oci-index' as const : 'oci-manifest' as const, sizes: [2 * KiB, 8 * KiB] })),
      ...DIGEST_IMAGES.map((ref) => ({ ref, kind: 'oci-index' as const, sizes: [4 * KiB] })),
    ];
    layout = await buildLayoutOf(join(work, 'layout'), specs);
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
  });

  afterAll(async () => {
    await containerd?.stop();
    for (const s of sluices) await s.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function serve(name: string, windows: 'always' | 'never', allowlist: string[]): Promise<SluiceProcess> {
    const dir = join(work, name);
    await mkdir(dir, { recursive: true });
    const s = await startSluiceProcess(config(windows, allowlist), { dir });
    sluices.push(s);
    return s;
  }

  test('containerd pulls installer@sha256:<index digest> of a tag-ruled image on a cold store inside a window', async () => {
    const installer = image('ghcr.io/siderolabs/installer:v1.12.0');
    const sluice = await serve('open', 'always', ['ghcr.io/siderolabs/installer:v1.12.0']);
    containerd = await startContainerd();
    const hosts = join(work, 'certs-open');
    await writeHostsToml(hosts, '_default', sluice.hostPort);
    const ref = `ghcr.io/siderolabs/installer@${installer.digest}`;
    const r = await containerd.pull(ref, hosts);
    expect(r.code, `${r.stderr}${r.stdout}`).toBe(0);
    expect(await containerd.imageDigest(ref)).toBe(installer.digest);
    const content = new Set(await containerd.contentDigests());
    const amd64 = installer.platforms?.find((p) => p.arch === 'amd64')?.digest;
    expect(amd64 && content.has(amd64)).toBe(true);
    // Another image's digest asked for through the installer's name is refused, not fetched.
    const other = image('ghcr.io/siderolabs/talos:v1.12.0');
    const denied = await fetch(`${sluice.url}/v2/siderolabs/installer/manifests/${other.digest}?ns=ghcr.io`);
    expect(denied.status).toBe(403);
  });

  test('outside a window the same pull on a cold store gets the fast 404 naming the window', async () => {
    const installer = image('ghcr.io/siderolabs/installer:v1.12.0');
    const sluice = await serve('closed', 'never', ['ghcr.io/siderolabs/installer:v1.12.0']);
    const url = `${sluice.url}/v2/siderolabs/installer/manifests/${installer.digest}?ns=ghcr.io`;
    const started = Date.now();
    const answer = await fetch(url);
    const body = (await answer.json()) as { errors: Array<{ code: string; message: string }> };
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(answer.status).toBe(404);
    expect(body.errors[0]?.code).toBe('MANIFEST_UNKNOWN');
    expect(body.errors[0]?.message).toMatch(/not cached; upstream access closed \(no sync window is scheduled\)/);
    containerd ??= await startContainerd();
    const hosts = join(work, 'certs-closed');
    await writeHostsToml(hosts, '_default', sluice.hostPort);
    const r = await containerd.fetch(`ghcr.io/siderolabs/installer@${installer.digest}`, join(work, 'certs-closed'));
    expect(r.code).not.toBe(0);
    // sluice answered 404 at once (containerd then tried its dead fallback `server`, as Talos without skipFallback).
    expect(`${r.stderr}${r.stdout}`).toContain(`response was http.StatusNotFound" host="${sluice.hostPort}"`);
  });

  test('allow import of a real-format talos-bundle list gives exact rules and digest pins; sync fetches them all', async () => {
    const dir = join(work, 'bundle');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'sluice.yaml'), config('always'));
    const digestLines = DIGEST_IMAGES.map((ref) => `${ref}@${image(ref).digest}`).sort();
    // As printed, then as an operator's file might have it: a comment, CRLF, trailing blanks, a duplicate.
    const printed = [...TAG_IMAGES, ...digestLines].join('\n') + '\n';
    const edited = `# talosctl images talos-bundle v1.12.0 --extensions --overlays\r\n${printed.replaceAll('\n', '  \r\n')}\r\n${TAG_IMAGES[0]}\r\n`;
    await writeFile(join(dir, 'talos-bundle.txt'), edited);
    const cfg = ['--config', join(dir, 'sluice.yaml')];
    const imported = await runSluice(['allow', 'import', join(dir, 'talos-bundle.txt'), ...cfg]);
    expect(imported.code, imported.stderr).toBe(0);
    const ls = await runSluice(['allow', 'ls', '--json', ...cfg]);
    const listed = JSON.parse(ls.stdout) as Array<{ rule: string }> | { rules: Array<{ rule: string }> };
    const rules = (Array.isArray(listed) ? listed : listed.rules).map((r) => r.rule).sort();
    expect(rules).toEqual([...TAG_IMAGES, ...digestLines].sort());
    const sync = await runSluice(['sync', '--json', ...cfg], { timeoutMs: 120_000 });
    expect(sync.code, sync.stderr).toBe(0);
    const report = JSON.parse(sync.stdout) as { fetched: string[]; failed: unknown[]; moved: unknown[] };
    expect(report.failed).toEqual([]);
    expect(report.fetched.sort()).toEqual(rules);
    expect(report.moved).toEqual([]);
    // Served from the store with the window closed: every tag and every pinned digest.
    await writeFile(join(dir, 'sluice.yaml'), config('never'));
    const served = await startSluiceProcess(config('never'), { dir });
    sluices.push(served);
    for (const ref of [...TAG_IMAGES, ...DIGEST_IMAGES]) {
      const img = image(ref);
      const [repo, tag] = ref.replace('ghcr.io/', '').split(':');
      const reference = TAG_IMAGES.includes(ref) ? tag : img.digest;
      const head = await fetch(`${served.url}/v2/${repo}/manifests/${reference}?ns=ghcr.io`, { method: 'HEAD' });
      expect(head.status, ref).toBe(200);
      expect(head.headers.get('docker-content-digest'), ref).toBe(img.digest);
    }
  });
});
