// Table tests for the response planner of immutable content: headers, HEAD, If-None-Match → 304,
// one byte range → 206 (RFC 9110 §14), ignored ranges → 200, unsatisfiable → 416 with `bytes */SIZE`.
import { describe, expect, test } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import { parseRange, planContent, type PlanInput } from '../../src/http/content.js';
import { MediaType } from '../kit/oci.js';

const D = `sha256:${'b'.repeat(64)}`;
const ETAG = `"${D}"`;
const base: PlanInput = { method: 'GET', digest: D, sizeBytes: 1000, contentType: 'application/octet-stream', ranges: true };

describe('parseRange', () => {
  const ok: Array<[string, number, { start: number; end: number } | undefined]> = [
    ['bytes=0-', 1000, { start: 0, end: 999 }],
    ['bytes=0-0', 1000, { start: 0, end: 0 }],
    ['bytes=10-19', 1000, { start: 10, end: 19 }],
    ['bytes=500-', 1000, { start: 500, end: 999 }],
    ['bytes=999-', 1000, { start: 999, end: 999 }],
    ['bytes=990-5000', 1000, { start: 990, end: 999 }],
    ['bytes=-10', 1000, { start: 990, end: 999 }],
    ['bytes=-1', 1000, { start: 999, end: 999 }],
    ['bytes=-5000', 1000, { start: 0, end: 999 }],
    ['BYTES = 1 - 2', 1000, { start: 1, end: 2 }],
    // Ignored (the whole content is sent): bad syntax, other units, several ranges, reversed.
    ['bytes=', 1000, undefined],
    ['bytes=-', 1000, undefined],
    ['bytes=5-2', 1000, undefined],
    ['bytes=0-1,5-6', 1000, undefined],
    ['items=0-1', 1000, undefined],
    ['bytes=a-b', 1000, undefined],
    ['bytes=-1-2', 1000, undefined],
    ['bytes=1.5-2', 1000, undefined],
    ['', 1000, undefined],
    ['bytes=0x10-', 1000, undefined],
  ];
  test.each(ok)('%j of %d bytes → %j', (header, size, want) => {
    expect(parseRange(header, size)).toEqual(want);
  });

  const unsatisfiable: Array<[string, number]> = [
    ['bytes=1000-', 1000],
    ['bytes=1000-2000', 1000],
    ['bytes=5000-', 1000],
    ['bytes=-0', 1000],
    ['bytes=0-', 0],
    ['bytes=-5', 0],
    [`bytes=${'9'.repeat(16)}-`, 1000],
    [`bytes=0-${'9'.repeat(400)}`, 1000],
  ];
  test.each(unsatisfiable)('%j of %d bytes → 416 with Content-Range bytes */SIZE', (header, size) => {
    try {
      parseRange(header, size);
      throw new Error('satisfied');
    } catch (e) {
      expect(e).toBeInstanceOf(RegistryError);
      const err = e as RegistryError;
      expect(err.status).toBe(416);
      expect(err.headers['content-range']).toBe(`bytes */${size}`);
    }
  });
});

describe('planContent', () => {
  test('GET: 200 with every header the distribution spec asks for', () => {
    const p = planContent(base);
    expect(p).toEqual({
      status: 200,
      sendBody: true,
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': '1000',
        'docker-content-digest': D,
        etag: ETAG,
        'accept-ranges': 'bytes',
      },
    });
  });

  test('HEAD: the same headers, no body', () => {
    const get = planContent(base);
    const head = planContent({ ...base, method: 'HEAD' });
    expect(head.headers).toEqual(get.headers);
    expect(head.status).toBe(200);
    expect(head.sendBody).toBe(false);
  });

  test('manifests (ranges: false): no Accept-Ranges and any Range is ignored', () => {
    const p = planContent({ ...base, contentType: MediaType.ociManifest, ranges: false, range: 'bytes=0-1' });
    expect(p.status).toBe(200);
    expect(p.headers['accept-ranges']).toBeUndefined();
    expect(p.headers['content-length']).toBe('1000');
    expect(p.range).toBeUndefined();
  });

  const ranged: Array<[string, number, number]> = [
    ['bytes=0-', 0, 999],
    ['bytes=100-199', 100, 199],
    ['bytes=900-', 900, 999],
    ['bytes=-100', 900, 999],
  ];
  test.each(ranged)('Range %j → 206 %d-%d', (range, start, end) => {
    const p = planContent({ ...base, range });
    expect(p.status).toBe(206);
    expect(p.range).toEqual({ start, end });
    expect(p.headers['content-range']).toBe(`bytes ${start}-${end}/1000`);
    expect(p.headers['content-length']).toBe(String(end - start + 1));
    expect(p.sendBody).toBe(true);
    expect(planContent({ ...base, range, method: 'HEAD' }).sendBody).toBe(false);
  });

  test('an ignored Range is a plain 200 of the whole content', () => {
    const p = planContent({ ...base, range: 'bytes=0-1,3-4' });
    expect(p.status).toBe(200);
    expect(p.headers['content-range']).toBeUndefined();
    expect(p.headers['content-length']).toBe('1000');
  });

  test('an unsatisfiable Range throws the 416 error', () => {
    expect(() => planContent({ ...base, range: 'bytes=1000-' })).toThrow(RegistryError);
  });

  const inm: Array<[string, number]> = [
    [ETAG, 304],
    [`W/${ETAG}`, 304],
    ['*', 304],
    [`"other", ${ETAG}`, 304],
    [` ${ETAG} `, 304],
    ['"other"', 200],
    [D, 200],
    ['', 200],
  ];
  test.each(inm)('If-None-Match %j → %d', (header, status) => {
    for (const method of ['GET', 'HEAD']) {
      const p = planContent({ ...base, method, ifNoneMatch: header });
      expect(p.status).toBe(status);
      expect(p.headers.etag).toBe(ETAG);
      expect(p.headers['docker-content-digest']).toBe(D);
      if (status === 304) expect(p.sendBody).toBe(false);
    }
  });

  test('If-None-Match wins over Range and over an unsatisfiable Range', () => {
    expect(planContent({ ...base, ifNoneMatch: ETAG, range: 'bytes=0-1' }).status).toBe(304);
    expect(planContent({ ...base, ifNoneMatch: ETAG, range: 'bytes=5000-' }).status).toBe(304);
  });

  test('zero-length content: 200 with Content-Length 0', () => {
    const p = planContent({ ...base, sizeBytes: 0 });
    expect(p.status).toBe(200);
    expect(p.headers['content-length']).toBe('0');
  });
});
