// A failure of the link to PostgreSQL becomes a 503 naming the database (host:port/db); any other database error
// (a constraint, a bug) stays what it is, so it is never mistaken for an outage.
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import { databaseError } from '../../src/store/pg/db.js';

const WHERE = 'db.lan:5432/sluice';
const withCode = (message: string, code: string): Error => Object.assign(new Error(message), { code });

describe('databaseError', () => {
  it.each([
    ['refused', withCode('connect ECONNREFUSED 10.0.0.5:5432', 'ECONNREFUSED'), /unreachable: connect ECONNREFUSED/],
    ['reset', withCode('read ECONNRESET', 'ECONNRESET'), /unreachable: read ECONNRESET/],
    ['pool wait past connectTimeout', new Error('timeout exceeded when trying to connect'), /timeout exceeded/],
    ['query past queryTimeout (client side)', new Error('Query read timeout'), /Query read timeout/],
    ['statement past queryTimeout (server side)', withCode('canceling statement due to statement timeout', '57014'), /did not answer within database\.postgres\.queryTimeout/],
    ['server shutting down', withCode('terminating connection due to administrator command', '57P01'), /administrator command/],
    ['connection class 08', withCode('connection failure', '08006'), /connection failure/],
    ['connection dropped', new Error('Connection terminated unexpectedly'), /Connection terminated/],
  ])('%s: 503 UNAVAILABLE naming the database', (_, err, why) => {
    const got = databaseError(WHERE, err);
    expect(got).toBeInstanceOf(RegistryError);
    const e = got as RegistryError;
    expect(e.status).toBe(503);
    expect(e.code).toBe('UNAVAILABLE');
    expect(e.message).toContain(`PostgreSQL at ${WHERE}`);
    expect(e.message).toMatch(why);
  });

  it('leaves other database errors as they are', () => {
    const unique = withCode('duplicate key value violates unique constraint', '23505');
    expect(databaseError(WHERE, unique)).toBe(unique);
    const lock = withCode('canceling statement due to lock timeout', '55P03');
    expect(databaseError(WHERE, lock)).toBe(lock);
    const registry = new RegistryError('DENIED', 'no');
    expect(databaseError(WHERE, registry)).toBe(registry);
  });
});
