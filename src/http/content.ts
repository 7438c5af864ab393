// Pure response planning for immutable, digest-addressed content: headers, HEAD, If-None-Match → 304,
// one byte range → 206 (RFC 9110 §14), unsatisfiable → 416. No I/O: callers stream what the plan says.
import { RegistryError } from '../oci/errors.js';

export interface ContentPlan {
  status: 200 | 206 | 304;
  headers: Record<string, string>;
  /** Inclusive byte range to send; undefined means the whole content (or nothing for 304/HEAD). */
  range?: { start: number; end: number };
  /** False for HEAD and 304: headers only. */
  sendBody: boolean;
}

export interface PlanInput {
  method: string;
  digest: string;
  sizeBytes: number;
  contentType: string;
  ifNoneMatch?: string;
  range?: string;
  /** Blobs advertise ranges; manifests are small and served whole. */
  ranges: boolean;
}

export function planContent(input: PlanInput): ContentPlan {
  const etag = `"${input.digest}"`;
  const headers: Record<string, string> = {
    'content-type': input.contentType,
    'docker-content-digest': input.digest,
    etag,
  };
  if (input.ranges) headers['accept-ranges'] = 'bytes';
  const head = input.method === 'HEAD';
  if (input.ifNoneMatch !== undefined && etagMatches(input.ifNoneMatch, etag)) {
    return { status: 304, headers, sendBody: false };
  }
  const range = input.ranges && input.range !== undefined ? parseRange(input.range, input.sizeBytes) : undefined;
  if (range) {
    headers['content-range'] = `bytes ${range.start}-${range.end}/${input.sizeBytes}`;
    headers['content-length'] = String(range.end - range.start + 1);
    return { status: 206, headers, range, sendBody: !head };
  }
  headers['content-length'] = String(input.sizeBytes);
  return { status: 200, headers, sendBody: !head };
}

function etagMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

/**
 * A single `bytes=` range. Syntactically invalid or multi-range headers are ignored and the whole
 * content is sent (RFC 9110 §14.2 lets a server ignore Range); a valid but unsatisfiable one is 416.
 */
export function parseRange(header: string, sizeBytes: number): { start: number; end: number } | undefined {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, first = '', last = ''] = m;
  if (first === '' && last === '') return undefined;
  if (first.length > 15 || last.length > 15) throw unsatisfiable(sizeBytes);
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || sizeBytes === 0) throw unsatisfiable(sizeBytes);
    return { start: Math.max(0, sizeBytes - suffix), end: sizeBytes - 1 };
  }
  const start = Number(first);
  const end = last === '' ? sizeBytes - 1 : Math.min(Number(last), sizeBytes - 1);
  if (last !== '' && Number(last) < start) return undefined;
  if (start >= sizeBytes) throw unsatisfiable(sizeBytes);
  return { start, end };
}

function unsatisfiable(sizeBytes: number): RegistryError {
  return new RegistryError('RANGE_NOT_SATISFIABLE', 'requested range not satisfiable', { sizeBytes }, {
    'content-range': `bytes */${sizeBytes}`,
  });
}
