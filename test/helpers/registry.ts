// Pushing a generated layout into the real upstream (the test kit's docker-registry) with skopeo, and asking it
// what a tag resolves to.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ACCEPT_MANIFESTS } from '../kit/oci.js';
import { runOk } from '../kit/proc.js';
import { basicAuth, type Creds } from '../kit/registry.js';
import { splitRef, writeSkopeoDir, type LayoutDescription } from './images.js';

export { startRegistry, type Creds, type RunningRegistry, type StartRegistryOptions } from '../kit/registry.js';
export { freePort } from '../kit/proc.js';

/** HEAD manifests/<reference> with every manifest Accept type; returns Docker-Content-Digest. */
export async function headManifest(hostPort: string, name: string, reference: string, creds?: Creds): Promise<string | undefined> {
  const headers: Record<string, string> = { Accept: ACCEPT_MANIFESTS };
  if (creds) headers.Authorization = basicAuth(creds);
  const r = await fetch(`http://${hostPort}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers });
  return r.ok ? (r.headers.get('docker-content-digest') ?? undefined) : undefined;
}

/**
 * Pushes every image of the layout to `hostPort/<name>:<tag>` (the reference without its
 * registry host) with skopeo, digests preserved, then checks the registry resolves each tag
 * to the layout's digest. OCI images go from the layout itself; Docker ones via `dir:`.
 */
export async function pushLayout(layoutDir: string, desc: LayoutDescription, hostPort: string, creds?: Creds): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'sluice-push-'));
  try {
    await Promise.all(
      desc.images.map(async (image, i) => {
        const { name, tag } = splitRef(image.ref);
        let src = `oci:${layoutDir}:${image.ref}`;
        if (image.kind.startsWith('docker')) {
          const out = join(scratch, String(i));
          await writeSkopeoDir(layoutDir, image.ref, out);
          src = `dir:${out}`;
        }
        const args = ['copy', '--quiet', '--insecure-policy', '--all', '--preserve-digests', '--dest-tls-verify=false'];
        if (creds) args.push('--dest-creds', `${creds.user}:${creds.pass}`);
        await runOk('skopeo', [...args, src, `docker://${hostPort}/${name}:${tag}`]);
        const served = await headManifest(hostPort, name, tag, creds);
        if (served !== image.digest) throw new Error(`${hostPort}/${name}:${tag} resolves to ${served}, expected ${image.digest}`);
      }),
    );
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
