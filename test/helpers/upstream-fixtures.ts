// Fake upstreams and sluice's upstream client pointed at them, made inside a test and closed after it (clients
// first, then the fakes).
import { afterEach } from 'vitest';
import { Upstream, type UpstreamOptions } from '../../src/upstream/client.js';
import { MiniUpstream } from './mini-upstream.js';

export interface UpstreamFixtures {
  /** A started MiniUpstream. */
  mini(): Promise<MiniUpstream>;
  /** An upstream client for host reg.test at `reg` (2 s connect, 5 s idle unless `opts` says otherwise). */
  client(reg: MiniUpstream, opts?: Partial<UpstreamOptions>): Upstream;
}

/** Call at the top of a test file (before its own afterEach hooks, which then run first). */
export function upstreamFixtures(): UpstreamFixtures {
  const started: MiniUpstream[] = [];
  const clients: Upstream[] = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await Promise.all(started.splice(0).map((m) => m.stop()));
  });
  return {
    async mini() {
      const m = await new MiniUpstream().start();
      started.push(m);
      return m;
    },
    client(reg, opts = {}) {
      const u = new Upstream({ host: 'reg.test', url: reg.url, connectTimeoutMs: 2000, idleTimeoutMs: 5000, ...opts });
      clients.push(u);
      return u;
    },
  };
}
