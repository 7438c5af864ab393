// `sluice import` of layouts that are wrong in the ways real ones are (the real CLI): each gets a message naming
// the file and the problem, exit 1 (2 for a usage problem), and leaves the store exactly as it was.
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import type { RunResult } from '../helpers/binaries.js';
import { blobPath, buildLayout, splitRef, writeTar, type LayoutDescription } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';
import { snapshot } from '../helpers/snapshot.js';

describe('sluice import of bad layouts', () => {
  let dir: string;
  let config: string;
  let storage: string;
  let layout: LayoutDescription;
  let n = 0;
  const sluice = (...args: string[]): Promise<RunResult> => runSluice([...args, '--config', config], { timeoutMs: 30_000 });

  /** A copy of the good layout with `index.json` replaced (a string is written as is). */
  async function variant(index: unknown): Promise<string> {
    const d = join(dir, `variant-${++n}`);
    await cp(layout.dir, d, { recursive: true });
    await writeFile(join(d, 'index.json'), typeof index === 'string' ? index : JSON.stringify(index));
    return d;
  }

  /** Runs the import and checks it changed nothing in the store. */
  async function refused(args: string[], code: number): Promise<string> {
    const before = await snapshot(storage);
    const r = await sluice('import', ...args);
    expect(r.code, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(code);
    expect(r.stdout).not.toContain('imported');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr, 'the message blames sluice\'s own temp folder').not.toContain(join(storage, 'tmp'));
    expect((await snapshot(storage)).files, 'the store changed').toEqual(before.files);
    return r.stderr;
  }

  const pause = (): LayoutDescription['images'][number] => layout.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
  const entry = (img: LayoutDescription['images'][number], ref = img.ref): unknown => ({
    mediaType: img.mediaType, digest: img.digest, size: img.size, annotations: { 'org.opencontainers.image.ref.name': ref },
  });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-import-bad-'));
    storage = join(dir, 'data');
    config = join(dir, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml('./data'));
    layout = await buildLayout(join(dir, 'layout'));
    await (await openStore({ storage })).close();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('an index.json entry that is not a manifest or index imports nothing and leaves no tag', async () => {
    const layer = pause().blobs[pause().blobs.length - 1]!;
    const d = await variant({ schemaVersion: 2, manifests: [{ mediaType: 'application/octet-stream', digest: layer.digest, size: layer.size, annotations: { 'org.opencontainers.image.ref.name': 'registry.k8s.io/blob:v1' } }] });
    const stderr = await refused([d], 1);
    expect(stderr).toContain('application/octet-stream');
    expect(stderr).toContain(join(d, 'index.json'));
  });

  it('index.json of null, of a non-object entry, or with no images is refused naming the file', async () => {
    for (const index of ['null', '[]', '{"manifests":null}', '{"manifests":[null]}', '{"manifests":[]}', '{"schemaVersion":2,', '']) {
      const d = await variant(index);
      const stderr = await refused([d], 1);
      expect(stderr, index).toContain(join(d, 'index.json'));
      expect(stderr, index).not.toContain('Cannot read properties');
    }
    const empty = await refused([await variant({ schemaVersion: 2, manifests: [] })], 1);
    expect(empty).toMatch(/lists no images/);
  });

  it('a tar whose entries sit under one top folder imports (the folder is looked into)', async () => {
    const parent = join(dir, 'nested');
    await mkdir(parent);
    await cp(layout.dir, join(parent, 'my-layout'), { recursive: true });
    const tarPath = join(dir, 'nested.tar');
    await writeTar(parent, tarPath);
    const fresh = join(dir, 'fresh');
    await mkdir(fresh);
    await writeFile(join(fresh, 'sluice.yaml'), sluiceConfigYaml('./data'));
    const r = await runSluice(['import', tarPath, '--config', join(fresh, 'sluice.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    const store = await openStore({ storage: join(fresh, 'data') });
    for (const img of layout.images) {
      const { host, name, tag } = splitRef(img.ref);
      expect(await store.getTag(host, name, tag), img.ref).toBe(img.digest);
    }
    await store.close();
  });

  it('an empty tar, a tar of several layouts and a file that is no tar name the tar, not a temp folder', async () => {
    const emptyDir = join(dir, 'empty');
    await mkdir(emptyDir);
    const emptyTar = join(dir, 'empty.tar');
    await writeTar(emptyDir, emptyTar);
    expect(await refused([emptyTar], 1)).toContain(emptyTar);
    const zeroBytes = join(dir, 'zero.tar');
    await writeFile(zeroBytes, '');
    expect(await refused([zeroBytes], 1)).toContain(zeroBytes);
    const two = join(dir, 'two');
    await cp(layout.dir, join(two, 'a'), { recursive: true });
    await cp(layout.dir, join(two, 'b'), { recursive: true });
    const twoTar = join(dir, 'two.tar');
    await writeTar(two, twoTar);
    const ambiguous = await refused([twoTar], 1);
    expect(ambiguous).toContain(twoTar);
    expect(ambiguous).toContain('a/');
    expect(ambiguous).toContain('b/');
    const notTar = join(dir, 'not.tar');
    await writeFile(notTar, 'this is not a tar archive at all, just some text that is long enough to fill a header'.repeat(20));
    expect(await refused([notTar], 1)).toContain(notTar);
  });

  it('a blob that is a symlink to /dev/zero, a FIFO, or a device as PATH is refused at once', async () => {
    // Only the image whose blob is replaced: the other images of the layout would import.
    const d = await variant({ schemaVersion: 2, manifests: [entry(pause())] });
    const layer = pause().blobs[pause().blobs.length - 1]!;
    await rm(blobPath(d, layer.digest));
    await symlink('/dev/zero', blobPath(d, layer.digest));
    const stderr = await refused([d], 1);
    expect(stderr).toContain(layer.digest);
    expect(stderr).toMatch(/symbolic link/);

    const f = await variant({ schemaVersion: 2, manifests: [entry(pause())] });
    await rm(blobPath(f, layer.digest));
    execFileSync('mkfifo', [blobPath(f, layer.digest)]);
    expect(await refused([f], 1)).toMatch(/not a regular file/);

    expect(await refused(['/dev/zero'], 1)).toContain('/dev/zero');
  });

  it('--as that is not a full tagged reference, or names one of several images, is a usage error (exit 2)', async () => {
    const single = await variant({ schemaVersion: 2, manifests: [entry(pause(), 'v1')] });
    const bare = await refused([single, '--as', 'v1'], 2);
    expect(bare).toContain('--as');
    expect(bare).toContain('"v1"');
    expect(bare).not.toContain('org.opencontainers.image.ref.name');
    const many = await refused([layout.dir, '--as', 'ghcr.io/x/y:z'], 2);
    expect(many).toMatch(/--as names one image/);
    expect(many).toContain(`holds ${layout.images.length}`);
    expect(many).toContain(join(layout.dir, 'index.json'));
  });
});
