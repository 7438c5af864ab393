// The query side of a replica's PostgreSQL pool with every wait bounded (connecting, waiting for a pooled
// connection, each query) and failures of the link turned into a 503 that names the database.
import type pg from 'pg';
import { RegistryError } from '../../oci/errors.js';

/** SQLSTATEs of a link or server that is going away or not taking work (class 08, admin shutdown, starting up). */
const LINK_STATES = new Set(['57P01', '57P02', '57P03', '53300']);
const LINK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/** What pg and pg-pool say when a bound passes or the connection drops (they set no code). */
const LINK_MESSAGES = /timeout|timed out|Connection terminated|connection ended|Client has encountered a connection error|not queryable/i;

/**
 * A failure of the link to the database as a 503 naming it (`where`: host:port and database); anything else (a
 * constraint, a bug) as it is. A statement cancelled by statement_timeout is the database hanging too.
 */
export function databaseError(where: string, e: unknown): unknown {
  if (e instanceof RegistryError) return e;
  const code = (e as { code?: unknown } | undefined)?.code;
  const message = e instanceof Error ? e.message : String(e);
  const link = typeof code === 'string' && (LINK_CODES.has(code) || LINK_STATES.has(code) || code.startsWith('08') || code === '57014');
  // A SQLSTATE outside the link classes (a lock timeout, a constraint) is the database answering: not an outage.
  const answered = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
  if (!link && (answered || !LINK_MESSAGES.test(message))) return e;
  const why = code === '57014' ? 'did not answer within database.postgres.queryTimeout' : message || String(code);
  return new RegistryError('UNAVAILABLE', `the database (PostgreSQL at ${where}) is unreachable: ${why}`, { database: where });
}

export class PgDb {
  constructor(private readonly pool: pg.Pool, readonly where: string) {}

  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (e) {
      throw databaseError(this.where, e);
    }
  }

  /** A connection of its own (a transaction); waiting for one is bounded by connectTimeout. */
  async connect(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (e) {
      throw databaseError(this.where, e);
    }
  }

  end(): Promise<void> {
    return this.pool.end();
  }
}

/** A query the client gives up on after `timeoutMs` (pg reads `query_timeout`; its types do not list it). */
export function boundedQuery(text: string, values: unknown[], timeoutMs: number): pg.QueryConfig {
  const q = { text, values, query_timeout: timeoutMs };
  return q;
}
