// RegistryError and the one table mapping an error kind to its HTTP status and OCI code.
// Every status sluice answers with for a failure is chosen here and nowhere else.

export type ErrorKind =
  | 'NAME_INVALID'
  | 'DIGEST_INVALID'
  | 'TAG_INVALID'
  | 'MANIFEST_INVALID'
  | 'SIZE_INVALID'
  | 'RANGE_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'NAME_UNKNOWN'
  | 'MANIFEST_UNKNOWN'
  | 'BLOB_UNKNOWN'
  | 'NOT_FOUND'
  | 'UNSUPPORTED'
  | 'WINDOW_CLOSED'
  | 'RANGE_NOT_SATISFIABLE'
  | 'TOOMANYREQUESTS'
  | 'UPSTREAM_FAILED'
  | 'INSUFFICIENT_STORAGE'
  | 'UNAVAILABLE'
  | 'BAD_REQUEST'
  // Admin API (issue 14, items 7 and 11).
  | 'ADMIN_INVALID_REQUEST'
  | 'ALLOWLIST_FILE_INVALID'
  | 'RULE_FROM_CONFIG';

interface Row {
  status: number;
  /** The OCI error code sent in the body; distribution-spec §error-codes plus our own where it has none. */
  code: string;
}

const TABLE: Record<ErrorKind, Row> = {
  NAME_INVALID: { status: 400, code: 'NAME_INVALID' },
  DIGEST_INVALID: { status: 400, code: 'DIGEST_INVALID' },
  TAG_INVALID: { status: 400, code: 'TAG_INVALID' },
  MANIFEST_INVALID: { status: 400, code: 'MANIFEST_INVALID' },
  SIZE_INVALID: { status: 400, code: 'SIZE_INVALID' },
  RANGE_INVALID: { status: 400, code: 'RANGE_INVALID' },
  PAGINATION_NUMBER_INVALID: { status: 400, code: 'PAGINATION_NUMBER_INVALID' },
  BAD_REQUEST: { status: 400, code: 'UNSUPPORTED' },
  UNAUTHORIZED: { status: 401, code: 'UNAUTHORIZED' },
  DENIED: { status: 403, code: 'DENIED' },
  NAME_UNKNOWN: { status: 404, code: 'NAME_UNKNOWN' },
  MANIFEST_UNKNOWN: { status: 404, code: 'MANIFEST_UNKNOWN' },
  BLOB_UNKNOWN: { status: 404, code: 'BLOB_UNKNOWN' },
  NOT_FOUND: { status: 404, code: 'NOT_FOUND' },
  UNSUPPORTED: { status: 405, code: 'UNSUPPORTED' },
  // Admin API only: a sync asked for while upstream access is closed is a state conflict.
  WINDOW_CLOSED: { status: 409, code: 'WINDOW_CLOSED' },
  RANGE_NOT_SATISFIABLE: { status: 416, code: 'RANGE_NOT_SATISFIABLE' },
  TOOMANYREQUESTS: { status: 429, code: 'TOOMANYREQUESTS' },
  UPSTREAM_FAILED: { status: 502, code: 'UPSTREAM_FAILED' },
  // The store's disk is full (RFC 4918 §11.5): the mirror cannot take the blob, the upstream is not at fault.
  INSUFFICIENT_STORAGE: { status: 507, code: 'INSUFFICIENT_STORAGE' },
  // A shared engine (PostgreSQL, the object store) is unreachable, hangs, or this replica cannot confirm it is
  // current: containerd moves to its next endpoint, which is right (the message names the engine).
  UNAVAILABLE: { status: 503, code: 'UNAVAILABLE' },
  // Admin API: a body or querystring that does not fit the route's schema (wrong type, unknown or missing field).
  ADMIN_INVALID_REQUEST: { status: 400, code: 'ADMIN_INVALID_REQUEST' },
  // Admin API: allowlist.json was broken by hand; edits wait until it is fixed (the last good rules stay in force).
  ALLOWLIST_FILE_INVALID: { status: 409, code: 'ALLOWLIST_FILE_INVALID' },
  // Admin API: a rule the config's `allowlist:` seeds cannot be removed here (it would be back at the next start).
  RULE_FROM_CONFIG: { status: 409, code: 'RULE_FROM_CONFIG' },
};

export class RegistryError extends Error {
  readonly kind: ErrorKind;
  readonly detail: unknown;
  /** Extra response headers, e.g. Retry-After for 429 or Content-Range for 416. */
  readonly headers: Record<string, string>;

  constructor(kind: ErrorKind, message: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'RegistryError';
    this.kind = kind;
    this.detail = detail;
    this.headers = headers;
  }

  get status(): number {
    return TABLE[this.kind].status;
  }

  get code(): string {
    return TABLE[this.kind].code;
  }

  /** The OCI error body: {"errors":[{"code","message","detail"}]}. */
  toBody(): { errors: Array<{ code: string; message: string; detail: unknown }> } {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail ?? null }] };
  }
}
