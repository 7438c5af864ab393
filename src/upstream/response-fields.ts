// The request and response headers the client reads or sets: authorization, digest, media type, the tags Link.
import { isDigestShape } from '../oci/reference.js';
import { isRecord } from './errors.js';
import { header, type Headers, type Response } from './transport.js';

export function withAuth(headers: Headers | undefined, authorization: string | undefined): Headers {
  return authorization ? { ...headers, authorization } : { ...headers };
}

export function digestOf(res: Response): string | undefined {
  const v = header(res, 'docker-content-digest')?.trim();
  return v && isDigestShape(v) ? v : undefined;
}

/** Content-Type without parameters; a generic one is replaced by the manifest's own mediaType field. */
export function mediaTypeOf(res: Response, body?: Buffer): string {
  const ct = (header(res, 'content-type') ?? '').split(';')[0].trim();
  if (ct && !['application/json', 'text/plain', 'application/octet-stream'].includes(ct)) return ct;
  if (body) {
    try {
      const doc: unknown = JSON.parse(body.toString('utf8'));
      if (isRecord(doc) && typeof doc.mediaType === 'string') return doc.mediaType;
    } catch {
      // not JSON: keep what the upstream said
    }
  }
  return ct || 'application/octet-stream';
}

export function nextLastOf(link: string | undefined): string | undefined {
  const m = link ? /<([^>]*)>\s*;\s*rel="?next"?/.exec(link) : null;
  return m ? (new URL(m[1], 'http://x').searchParams.get('last') ?? undefined) : undefined;
}
