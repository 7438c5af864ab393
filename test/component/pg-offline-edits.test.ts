// With no server reachable, `sluice allow` and `sluice window` edit the shared database directly: such an edit
// still reports success only once every live replica acknowledged it, and otherwise names the one that did not.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/registry.js';
import { freshDatabase, requireServices } from '../helpers/services.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';

const ok = requireServices(['postgres'], 'test/component/pg-offline-edits.test.ts');
const RULE = 'ghcr.io/acme/app:v1';

describe.skipIf(!ok)('CLI edits of the shared database with no server reachable', () => {
  let dir: string;
  let config: string;
  let db: { url: string; drop(): Promise<void> };

  beforeAll(async () => {
    db = await freshDatabase();
    dir = await mkdtemp(join(tmpdir(), 'sluice-pg-offline-'));
    config = join(dir, 'sluice.yaml');
    const port = await freePort(); // nothing listens there: the CLI edits the database itself
    await writeFile(config, sluiceConfigYaml(join(dir, 'data'), { extra: { admin: { listen: `127.0.0.1:${port}` }, database: { postgres: { url: db.url, freshness: '1s' } } } }));
    const added = await runSluice(['allow', 'add', RULE, '--config', config]);
    expect(added.code, added.stderr).toBe(0);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    await db?.drop();
  });

  it('allow rm and window close fail naming a live replica that did not acknowledge them', async () => {
    // A replica whose change feed is open (PostgreSQL lists its LISTEN session) but which never applies anything.
    const ghost = new pg.Client({ connectionString: db.url, application_name: 'sluice-listen-ghost0replica' });
    await ghost.connect();
    try {
      await ghost.query('LISTEN sluice_allowlist');
      await ghost.query('LISTEN sluice_window');
      const removed = await runSluice(['allow', 'rm', RULE, '--config', config]);
      expect(removed.code, removed.stdout + removed.stderr).toBe(1);
      expect(removed.stderr).toMatch(/replica ghost0replica did not acknowledge/);
      const closed = await runSluice(['window', 'close', '--config', config]);
      expect(closed.code, closed.stdout + closed.stderr).toBe(1);
      expect(closed.stderr).toMatch(/replica ghost0replica did not acknowledge/);
    } finally {
      await ghost.end();
    }
    // Recorded all the same (the replicas refuse to serve until they catch up); with every replica current it succeeds.
    const again = await runSluice(['allow', 'rm', RULE, '--config', config]);
    expect(again.code, again.stdout + again.stderr).toBe(1);
    expect(again.stderr).toMatch(/not on the allowlist: ghcr.io\/acme\/app:v1/);
    const added = await runSluice(['allow', 'add', RULE, '--config', config]);
    expect(added.code, added.stderr).toBe(0);
    const removed = await runSluice(['allow', 'rm', RULE, '--config', config]);
    expect(removed.code, removed.stderr).toBe(0);
  }, 60_000);
});
