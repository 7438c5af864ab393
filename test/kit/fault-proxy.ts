// A TCP proxy a test controls, in front of a real service (PostgreSQL, an object store): it passes bytes, refuses
// connections, freezes them (half-open: accepted, nothing forwarded either way), slows them, and restores them.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

export type ProxyMode = { kind: 'pass' } | { kind: 'refuse' } | { kind: 'freeze' } | { kind: 'slow'; delayMs: number };

interface Pair {
  client: Socket;
  target: Socket;
}

export class FaultProxy {
  private mode: ProxyMode = { kind: 'pass' };
  private readonly pairs = new Set<Pair>();
  private readonly waiters: Array<() => void> = [];
  private readonly server: Server;
  private port = 0;
  /** Connections accepted since the start (refused ones included). */
  accepted = 0;

  private constructor(private readonly targetHost: string, private readonly targetPort: number) {
    this.server = createServer((client) => this.accept(client));
  }

  static async start(target: { host: string; port: number }): Promise<FaultProxy> {
    const p = new FaultProxy(target.host, target.port);
    p.server.listen(0, '127.0.0.1');
    await once(p.server, 'listening');
    const address = p.server.address();
    p.port = typeof address === 'object' && address ? address.port : 0;
    return p;
  }

  /** `127.0.0.1:PORT`, what the service's clients dial instead of the service. */
  get hostPort(): string {
    return `127.0.0.1:${this.port}`;
  }

  get listenPort(): number {
    return this.port;
  }

  get current(): ProxyMode {
    return this.mode;
  }

  /** Every connection, open and new, is reset at once: a service that is down. */
  refuse(): void {
    this.setMode({ kind: 'refuse' });
    for (const p of this.pairs) this.cut(p);
  }

  /** Connections open and new stay up but carry no byte in either direction: a half-open link. */
  freeze(): void {
    this.setMode({ kind: 'freeze' });
    for (const p of this.pairs) {
      p.client.pause();
      p.target.pause();
    }
  }

  /** Every chunk, either way, waits `delayMs` before it is passed on. */
  slow(delayMs: number): void {
    this.setMode({ kind: 'slow', delayMs });
    for (const p of this.pairs) {
      p.client.resume();
      p.target.resume();
    }
  }

  /** Back to passing bytes; frozen connections carry on where they stopped. */
  restore(): void {
    this.setMode({ kind: 'pass' });
    for (const p of this.pairs) {
      p.client.resume();
      p.target.resume();
    }
  }

  async stop(): Promise<void> {
    for (const p of this.pairs) this.cut(p);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    this.accepted++;
    if (this.mode.kind === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const target = createConnection({ host: this.targetHost, port: this.targetPort });
    const pair = { client, target };
    this.pairs.add(pair);
    const done = (): void => {
      if (!this.pairs.delete(pair)) return;
      client.destroy();
      target.destroy();
    };
    client.on('error', done).on('close', done);
    target.on('error', done).on('close', done);
    this.forward(client, target);
    this.forward(target, client);
    if (this.mode.kind === 'freeze') {
      client.pause();
      target.pause();
    }
  }

  /** Data flows from `from` to `to` in order, each chunk delayed while the proxy is slow and held while it is frozen. */
  private forward(from: Socket, to: Socket): void {
    let chain = Promise.resolve();
    const send = (chunk: Buffer | null) => async (): Promise<void> => {
      for (;;) {
        const mode = this.mode;
        if (mode.kind === 'freeze' || mode.kind === 'refuse') await this.changed();
        else {
          if (mode.kind === 'slow') await new Promise<void>((resolve) => setTimeout(resolve, mode.delayMs));
          break;
        }
      }
      if (to.destroyed) return;
      if (chunk) to.write(chunk);
      else to.end();
    };
    from.on('data', (chunk: Buffer) => {
      chain = chain.then(send(chunk));
    });
    from.on('end', () => {
      chain = chain.then(send(null));
    });
  }

  /** Resolves at the next change of mode. */
  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private setMode(mode: ProxyMode): void {
    this.mode = mode;
    for (const w of this.waiters.splice(0)) w();
  }

  private cut(p: Pair): void {
    this.pairs.delete(p);
    p.client.resetAndDestroy();
    p.target.destroy();
  }
}
