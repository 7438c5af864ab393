// The one repository graph (src/oci/repository-graph.ts) that the request decision, gc, coverage, export and
// upstream reach read: what it reaches from a repository's roots, and that another repository's tags and referrers stay out.
import { describe, expect, it } from 'vitest';
import { reachableFrom, repositoryGraph, type RepositoryLookup } from '../../src/oci/repository-graph.js';
import { MediaType, type Descriptor } from '../../src/oci/manifest.js';

const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const desc = (c: string, mediaType = 'application/octet-stream'): Descriptor => ({ mediaType, digest: dg(c), size: 1 });
const image = (config: string, ...layers: Descriptor[]): object => ({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: desc(config), layers });

/** Two repositories on one set of stored manifests: each has its own tags and referrers. */
function store(): RepositoryLookup {
  const manifests: Record<string, object> = {
    [dg('a')]: image('c', desc('1'), { mediaType: 'application/octet-stream', digest: 'sha512:not-followed', size: 1 }),
    [dg('s')]: image('d', desc('2')),
    [dg('r')]: image('e', desc('3')),
    [dg('x')]: image('f', desc('4')),
  };
  const tags: Record<string, Record<string, string>> = { 'docker.io/app': { [`sha256-${'a'.repeat(64)}.sig`]: dg('s') }, 'docker.io/other': { [`sha256-${'a'.repeat(64)}.att`]: dg('x') } };
  const referrers: Record<string, Record<string, Descriptor[]>> = { 'docker.io/app': { [dg('a')]: [desc('r', MediaType.ociManifest)] }, 'docker.io/other': { [dg('a')]: [desc('x', MediaType.ociManifest)] } };
  return {
    getManifest: (d) => {
      const doc = manifests[d];
      return doc && { mediaType: MediaType.ociManifest, body: Buffer.from(JSON.stringify(doc)) };
    },
    getTag: (host, name, tag) => tags[`${host}/${name}`]?.[tag],
    referrers: (host, name, d) => referrers[`${host}/${name}`]?.[d] ?? [],
  };
}

const short = (set: Set<string>): string[] => [...set].map((d) => d.slice(7, 8)).sort();

describe('repositoryGraph / reachableFrom', () => {
  it('reaches the image, its config and layers, and this repository’s signature tags and referrers with theirs', async () => {
    const reached = await reachableFrom(repositoryGraph(store(), 'docker.io', 'app'), [dg('a')]);
    expect(short(reached)).toEqual(['1', '2', '3', 'a', 'c', 'd', 'e', 'r', 's']);
  });

  it('never reaches another repository’s signature tags or referrers of the same digest', async () => {
    const reached = await reachableFrom(repositoryGraph(store(), 'docker.io', 'other'), [dg('a')]);
    expect(short(reached)).toEqual(['1', '4', 'a', 'c', 'f', 'x']);
    expect(reached.has(dg('s'))).toBe(false);
  });

  it('skips a child that is not sha256, reaches nothing from no root, and looks nothing up past the depth limit', async () => {
    const graph = repositoryGraph(store(), 'docker.io', 'app');
    expect([...(await reachableFrom(graph, [dg('a')]))].some((d) => !d.startsWith('sha256:'))).toBe(false);
    expect((await reachableFrom(graph, [])).size).toBe(0);
    expect(short(await reachableFrom(graph, [dg('a')], { maxDepth: 0 }))).toEqual(['1', 'a', 'c', 'r', 's']);
  });
});
