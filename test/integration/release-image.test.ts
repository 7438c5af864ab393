// The OCI image of sluice, built by the release tool with no container engine: real containerd imports its
// oci-archive and runs it with runc (host network, loopback ports, a temp folder as /data) as a non-root user that
// imports and serves an image to skopeo; skopeo reads its annotations; and another sluice imports the archive and
// serves sluice's own image to containerd (sluice mirrors itself).
import { chown, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, requireRoot, run, runOk } from '../helpers/binaries.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription } from '../helpers/images.js';
import { headManifest, startRegistry } from '../helpers/registry.js';
import { buildRelease, type Release } from '../helpers/release.js';
import { REPO_ROOT, runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { freePort, startProc, waitForHttp, type Proc } from '../kit/proc.js';

const SUITE = 'test/integration/release-image.test.ts';
const ok = requireBinaries(['skopeo', 'containerd', 'ctr', 'runc', 'docker-registry', 'apt-get', 'dpkg-deb'], SUITE) && requireRoot(SUITE);

/** The uid:gid the image runs as (its config's User). */
const IMAGE_UID = 10001;

describe.skipIf(!ok)('the OCI image of sluice under containerd + runc', () => {
  let work: string;
  let release: Release;
  let ref: string;
  let manifestDigest: string;
  let layout: LayoutDescription;
  let containerd: Containerd | undefined;
  let container: Proc | undefined;
  let mirror: SluiceProcess | undefined;
  const containerId = `sluice-image-${process.pid}`;

  beforeAll(async () => {
    work = await tempDir('release-image');
    release = await buildRelease(join(work, 'out'));
    const index = JSON.parse(await readFile(join(release.ociLayout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
    ref = index.manifests[0]?.annotations['org.opencontainers.image.ref.name'] ?? '';
    manifestDigest = index.manifests[0]?.digest ?? '';
    containerd = await startContainerd();
  }, 600_000);

  afterAll(async () => {
    if (container?.running && containerd) await run('ctr', ['-a', containerd.socket, '-n', 'archive', 'tasks', 'kill', '-s', 'SIGKILL', containerId]);
    await container?.stop();
    await mirror?.stop();
    await containerd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('skopeo inspect shows the version, source revision and creation date (the commit date) of the oci-archive', async () => {
    const head = (await runOk('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
    const committed = new Date(Number((await runOk('git', ['-C', REPO_ROOT, 'show', '-s', '--format=%ct', 'HEAD'])).stdout.trim()) * 1000);
    const raw = JSON.parse((await runOk('skopeo', ['inspect', '--raw', `oci-archive:${release.ociArchive}`])).stdout) as { annotations: Record<string, string> };
    expect(raw.annotations['org.opencontainers.image.version']).toBe(release.version);
    expect(raw.annotations['org.opencontainers.image.revision']).toMatch(new RegExp(`^${head}(-dirty)?$`));
    expect(new Date(raw.annotations['org.opencontainers.image.created'] ?? '').getTime()).toBe(committed.getTime());
    const inspected = JSON.parse((await runOk('skopeo', ['inspect', `oci-archive:${release.ociArchive}`])).stdout) as { Labels: Record<string, string>; Architecture: string };
    expect(inspected.Labels).toEqual(raw.annotations);
    expect(inspected.Architecture).toBe('amd64');
    const config = JSON.parse((await runOk('skopeo', ['inspect', '--config', `oci-archive:${release.ociArchive}`])).stdout) as { config: Record<string, unknown> };
    expect(config.config).toMatchObject({ User: `${IMAGE_UID}:${IMAGE_UID}`, ExposedPorts: { '6000/tcp': {} }, Volumes: { '/data': {} } });
    expect((config.config.Entrypoint as string[]).slice(-1)).toEqual(['serve']);
  });

  test('skopeo copies the oci-archive to a registry (docker://) with its digest', async () => {
    const registry = await startRegistry();
    try {
      const target = `${registry.hostPort}/sluice:${release.version}`;
      const r = await run('skopeo', ['copy', '--quiet', '--insecure-policy', '--dest-tls-verify=false', '--preserve-digests', `oci-archive:${release.ociArchive}:${ref}`, `docker://${target}`]);
      expect(r.code, r.stderr).toBe(0);
      expect(await headManifest(registry.hostPort, 'sluice', release.version)).toBe(manifestDigest);
    } finally {
      await registry.stop();
    }
  }, 300_000);

  test('another sluice imports the archive and serves sluice itself to containerd', async () => {
    const dir = join(work, 'mirror');
    const host = ref.split('/')[0] ?? '';
    const yaml = sluiceConfigYaml(join(dir, 'data'), { allowlist: [ref], upstreams: { [host]: { url: 'http://127.0.0.1:9' } } });
    await runOk('mkdir', ['-p', dir]);
    await writeFile(join(dir, 'sluice.yaml'), yaml);
    const imported = await runSluice(['import', release.ociArchive, '--config', join(dir, 'sluice.yaml')]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toContain(`imported ${ref} ${manifestDigest}`);
    mirror = await startSluiceProcess(yaml, { dir });
    const hosts = join(work, 'certs.d');
    await writeHostsToml(hosts, host, mirror.hostPort);
    const pulled = await containerd!.pull(ref, hosts);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(await containerd!.imageDigest(ref)).toBe(manifestDigest);
  }, 300_000);

  test('ctr images import takes the oci-archive; the image runs as non-root, imports into /data and serves skopeo on GET /v2/', async () => {
    // Its own namespace, so that the image comes from the archive, not from the mirror pull above.
    const imported = await run('ctr', ['-a', containerd!.socket, '-n', 'archive', 'images', 'import', release.ociArchive]);
    expect(imported.code, imported.stderr).toBe(0);
    expect((await runOk('ctr', ['-a', containerd!.socket, '-n', 'archive', 'images', 'ls', '-q'])).stdout.trim().split('\n')).toContain(ref);

    layout = await buildLayout(join(work, 'layout'));
    const data = join(work, 'data');
    await runOk('mkdir', ['-p', data]);
    await chown(data, IMAGE_UID, IMAGE_UID);
    await runOk('chmod', ['755', work]);
    const [port, adminPort] = [await freePort(), await freePort()];
    const config = join(work, 'image-sluice.yaml');
    await writeFile(config, sluiceConfigYaml('/data', { allowlist: layout.images.map((i) => i.ref), extra: { listen: `127.0.0.1:${port}`, admin: { listen: `127.0.0.1:${adminPort}` } } }));
    const mounts = [
      '--mount', `type=bind,src=${data},dst=/data,options=rbind:rw`,
      '--mount', `type=bind,src=${config},dst=/etc/sluice/sluice.yaml,options=rbind:ro`,
      '--mount', `type=bind,src=${layout.dir},dst=/layout,options=rbind:ro`,
    ];
    const ctrRun = ['-a', containerd!.socket, '-n', 'archive', 'run', '--rm', '--net-host', ...mounts, ref];
    const imp = await run('ctr', [...ctrRun, `${containerId}-import`, '/opt/sluice/node/bin/node', '/opt/sluice/dist/src/main.js', 'import', '/layout']);
    expect(imp.code, `${imp.stderr}${imp.stdout}`).toBe(0);
    for (const img of layout.images) expect(imp.stdout).toContain(`imported ${img.ref} ${img.digest}`);

    container = await startProc('sluice-image', 'ctr', [...ctrRun, containerId], join(work, 'container.log'));
    await waitForHttp(`http://127.0.0.1:${port}/v2/`, container, { timeoutMs: 60_000 });
    // Everything the container wrote is owned by the image's user, never root.
    expect((await stat(join(data, 'admin.token'))).uid).toBe(IMAGE_UID);
    for (const f of await readdir(join(data, 'blobs', 'sha256'), { recursive: true })) expect((await stat(join(data, 'blobs', 'sha256', String(f)))).uid, String(f)).toBe(IMAGE_UID);

    const img = layout.images.find((i) => i.ref === 'docker.io/library/busybox:1.36') ?? layout.images[0]!;
    const { host, name, tag } = splitRef(img.ref);
    const dest = join(work, 'skopeo');
    const copied = await skopeoCopyAll(`docker://127.0.0.1:${port}/${host}/${name}:${tag}`, dest);
    expect(copied.code, copied.stderr).toBe(0);
    expect(await verifyDirDigests(dest)).toBe(img.digest);

    await run('ctr', ['-a', containerd!.socket, '-n', 'archive', 'tasks', 'kill', '-s', 'SIGTERM', containerId]);
    expect(await container.exited).toBe(0);
  }, 600_000);
});
