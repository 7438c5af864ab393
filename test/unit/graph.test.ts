// Table tests of the one manifest-graph walker (src/oci/graph.ts) over an in-memory lookup: platforms of an
// index, a missing child, cycles, depth and node limits, referrers and signature tags, both orders.
import { describe, expect, it } from 'vitest';
import { signatureTags, walkGraph, type GraphSource, type WalkOptions } from '../../src/oci/graph.js';
import { MediaType, type Descriptor } from '../../src/oci/manifest.js';

const hex = (c: string): string => c.repeat(64).slice(0, 64);
const dg = (c: string): string => `sha256:${hex(c)}`;
const desc = (c: string, mediaType = 'application/octet-stream', platform?: Descriptor['platform']): Descriptor => ({ mediaType, digest: dg(c), size: 1, ...(platform ? { platform } : {}) });
const image = (config: string, ...layers: string[]): object => ({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: desc(config), layers: layers.map((l) => desc(l)) });
const index = (...manifests: Descriptor[]): object => ({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });

/** A store in memory: manifests by digest, tags, referrers; every lookup is recorded. */
function memory(manifests: Record<string, object | string>, tags: Record<string, string> = {}, referrers: Record<string, Descriptor[]> = {}): GraphSource & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    manifest: async (digest) => {
      calls.push(`manifest ${digest.slice(7, 8)}`);
      const doc = manifests[digest];
      if (doc === undefined) return undefined;
      const mediaType = typeof doc === 'string' ? MediaType.ociManifest : ((doc as { mediaType: string }).mediaType);
      return { mediaType, body: Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)) };
    },
    tag: (name) => {
      calls.push(`tag ${name.slice(7, 8)}${name.slice(71)}`);
      return tags[name];
    },
    referrers: async (digest) => referrers[digest] ?? [],
  };
}

const amd = desc('a', MediaType.ociManifest, { os: 'linux', architecture: 'amd64' });
const arm = desc('b', MediaType.ociManifest, { os: 'linux', architecture: 'arm64', variant: 'v8' });
const multi = {
  [dg('i')]: index(amd, arm),
  [dg('a')]: image('c', '1', '2'),
  [dg('b')]: image('d', '3'),
};
const kinds = (nodes: Array<{ digest: string; kind: string }>): string[] => nodes.map((n) => `${n.digest.slice(7, 8)}:${n.kind}`);

describe('walkGraph', () => {
  it.each<[string, WalkOptions, string[]]>([
    ['pull order: platforms only, blobs stay children', { children: 'by-parent' }, ['i:index', 'a:manifest', 'b:manifest']],
    ['an index with one platform followed', { children: 'by-parent', follow: (c) => c.platform?.architecture === 'arm64' }, ['i:index', 'b:manifest']],
    ['reachability: every digest looked up', { children: 'all' }, ['i:index', 'a:manifest', 'b:manifest', '1:blob', '2:blob', 'c:blob', '3:blob', 'd:blob']],
    ['layout order: depth first, blobs by media type', { order: 'depth', children: 'by-media-type' }, ['i:index', 'a:manifest', '1:blob', '2:blob', 'c:blob', 'b:manifest', '3:blob', 'd:blob']],
  ])('%s', async (_, opts, expected) => {
    const graph = await walkGraph(memory(multi), [dg('i')], opts);
    expect(kinds(graph.nodes)).toEqual(expected);
    expect(graph.missing).toEqual([]);
    expect(graph.truncated).toBe(false);
  });

  it('keeps a manifest’s children as listed, duplicates included, and looks up no blob in pull order', async () => {
    const src = memory({ [dg('m')]: image('c', '1', '1') });
    const graph = await walkGraph(src, [dg('m')], { children: 'by-parent' });
    expect(graph.nodes[0]?.children.map((d) => d.digest.slice(7, 8))).toEqual(['1', '1', 'c']);
    expect(src.calls).toEqual(['manifest m']);
  });

  it('reports a missing child and a body that is no manifest', async () => {
    const graph = await walkGraph(memory({ [dg('i')]: index(amd, desc('x', MediaType.ociManifest)), [dg('a')]: 'not json' }), [dg('i')], { children: 'by-parent' });
    expect(kinds(graph.nodes)).toEqual(['i:index', 'a:invalid', 'x:missing']);
    expect(graph.missing).toEqual([dg('x')]);
  });

  it('visits each node of a cycle once', async () => {
    const cyclic = {
      [dg('a')]: index(desc('b', MediaType.ociIndex)),
      [dg('b')]: index(desc('a', MediaType.ociIndex), desc('c', MediaType.ociIndex)),
      [dg('c')]: index(desc('a', MediaType.ociIndex)),
    };
    for (const order of ['breadth', 'depth'] as const) {
      const src = memory(cyclic);
      const graph = await walkGraph(src, [dg('a')], { order, children: 'by-parent' });
      expect(kinds(graph.nodes)).toEqual(['a:index', 'b:index', 'c:index']);
      expect(src.calls).toEqual(['manifest a', 'manifest b', 'manifest c']);
    }
  });

  it.each<[string, WalkOptions, number, boolean]>([
    ['no limit', {}, 7, false],
    ['depth 4: nodes to depth 5 known, depth 5 not looked up', { maxDepth: 4 }, 6, true],
    ['depth 0: only the root looked up', { maxDepth: 0 }, 2, true],
    ['depth first, depth 2', { order: 'depth', maxDepth: 2 }, 4, true],
  ])('chain d0 → d6, %s', async (_, opts, count, truncated) => {
    const chain: Record<string, object> = {};
    for (let i = 0; i < 7; i++) chain[dg(String(i))] = index(...(i < 6 ? [desc(String(i + 1), MediaType.ociIndex)] : []));
    const graph = await walkGraph(memory(chain), [dg('0')], { children: 'by-parent', ...opts });
    expect(graph.nodes).toHaveLength(count);
    expect(graph.truncated).toBe(truncated);
    expect(graph.nodes.filter((n) => n.kind === 'truncated').map((n) => n.depth)).toEqual(truncated ? [count - 1] : []);
  });

  it('stops looking up the next level once maxNodes digests are known', async () => {
    const star = { [dg('r')]: index(...'0123456789abcdef'.split('').map((c) => desc(c, MediaType.ociManifest))) };
    const src = memory(star);
    const graph = await walkGraph(src, [dg('r')], { children: 'all', maxNodes: 10 });
    expect(graph.nodes).toHaveLength(17);
    expect(graph.truncated).toBe(true);
    expect(src.calls).toEqual(['manifest r']);
  });

  it('follows signature tags (.sig, .att, plain) and referrers of roots and indexes in pull order', async () => {
    const tags = { [`sha256-${hex('i')}.sig`]: dg('s'), [`sha256-${hex('i')}`]: dg('t'), [`sha256-${hex('a')}.sig`]: dg('u') };
    const refs = { [dg('i')]: [desc('r', MediaType.ociManifest)] };
    const manifests = { ...multi, [dg('s')]: image('e', '4'), [dg('t')]: image('f'), [dg('r')]: image('g'), [dg('u')]: image('h') };
    const src = memory(manifests, tags, refs);
    const graph = await walkGraph(src, [dg('i')], { children: 'by-parent', signatures: 'roots-and-indexes' });
    expect(graph.nodes.map((n) => `${n.digest.slice(7, 8)}:${n.via}`)).toEqual(['i:root', 'a:child', 'b:child', 's:signature', 't:signature', 'r:referrer']);
    expect(src.calls.filter((c) => c.startsWith('tag'))).toEqual(['tag i.sig', 'tag i.att', 'tag i']);
    // 'all' asks for every node's signatures, so the platform manifest's own .sig is found too.
    const all = await walkGraph(memory(manifests, tags, refs), [dg('i')], { children: 'by-parent', signatures: 'all' });
    expect(all.nodes.map((n) => n.digest.slice(7, 8))).toEqual(['i', 'a', 'b', 's', 't', 'r', 'u']);
  });

  it('calls onNode before a node’s children and onLeave after them (depth first)', async () => {
    const seen: string[] = [];
    await walkGraph(memory(multi), [desc('i', MediaType.ociIndex)], {
      order: 'depth',
      children: 'by-media-type',
      onNode: (n) => void seen.push(`+${n.digest.slice(7, 8)}`),
      onLeave: (n) => void seen.push(`-${n.digest.slice(7, 8)}`),
    });
    expect(seen).toEqual(['+i', '+a', '+1', '+2', '+c', '-a', '+b', '+3', '+d', '-b', '-i']);
  });

  it('ends the walk with the error a lookup or a callback throws', async () => {
    const failing: GraphSource = { manifest: () => Promise.reject(new Error('upstream gone')) };
    await expect(walkGraph(failing, [dg('i')])).rejects.toThrow('upstream gone');
    await expect(walkGraph(memory(multi), [dg('i')], { onNode: () => { throw new Error('stop'); } })).rejects.toThrow('stop');
  });

  it('names the signature tags of a digest', () => {
    expect(signatureTags(dg('a'))).toEqual([`sha256-${hex('a')}.sig`, `sha256-${hex('a')}.att`, `sha256-${hex('a')}`]);
  });
});
