// Starting sluice in this process for component tests (buildApp on 127.0.0.1:0, temp storage). What the bench
// shares (the config documents, sluice as its own process for CLI and integration tests) is the test kit's, re-exported.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp, type App, type BuildOptions } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { sluiceConfigDoc, type SluiceConfigOptions } from '../kit/sluice-config.js';

export { DEAD_UPSTREAMS, sluiceConfigDoc, sluiceConfigYaml, type SluiceConfigOptions, type UpstreamSpec } from '../kit/sluice-config.js';
export { REPO_ROOT, runSluice, SLUICE_MAIN, startSluiceProcess, type SluiceProcess, type StartProcessOptions } from '../kit/sluice.js';

export interface InProcessSluice {
  app: App;
  /** `http://127.0.0.1:PORT` of the registry listener. */
  url: string;
  hostPort: string;
  /** The temp folder: the config path points here, the store is `storage` beneath it. */
  dir: string;
  storage: string;
  /** Closes the app and removes the temp folder. Safe to call twice. */
  close(): Promise<void>;
}

export interface StartSluiceOptions extends SluiceConfigOptions {
  /** Passed to buildApp (e.g. a fake clock). */
  build?: BuildOptions;
}

/** Builds sluice in this process on 127.0.0.1:0 with a fresh temp store; nothing else is written. */
export async function startSluice(opts: StartSluiceOptions = {}): Promise<InProcessSluice> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-app-'));
  const storage = join(dir, 'data');
  let app: App;
  try {
    const config = validateConfig(sluiceConfigDoc(storage, opts), join(dir, 'sluice.yaml'));
    app = await buildApp(config, opts.build);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  let address: string;
  try {
    address = await app.registry.listen({ host: '127.0.0.1', port: 0 });
  } catch (e) {
    await app.close();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const url = address.replace('localhost', '127.0.0.1');
  let closed: Promise<void> | undefined;
  return {
    app,
    url,
    hostPort: new URL(url).host,
    dir,
    storage,
    close() {
      closed ??= (async () => {
        await app.close();
        await rm(dir, { recursive: true, force: true });
      })();
      return closed;
    },
  };
}
