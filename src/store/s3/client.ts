// The S3 client a store on an object store talks through: endpoint, region, path-style addressing, credentials
// from files, named environment variables or the SDK's default chain, and an extra CA for a private endpoint.
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import type { S3StorageConfig } from '../../config/config.js';

/** Sockets per replica to the object store: every blob read in flight holds one. */
const MAX_SOCKETS = 256;

export function s3Client(c: S3StorageConfig): S3Client {
  // The SDK warns once per process that its 2027 releases will need Node 22; sluice pins its SDK version, so the
  // warning says nothing an operator can act on. Only this one warning is turned off, and only if unset.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const ca = c.tls?.ca ? readFileSync(c.tls.ca, 'utf8') : undefined;
  return new S3Client({
    ...(c.endpoint ? { endpoint: c.endpoint } : {}),
    region: c.region,
    forcePathStyle: c.forcePathStyle,
    credentials: credentials(c),
    // RGW 16 and older MinIO refuse the CRC32 trailers newer SDKs add to every upload by default.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Bounded answers when the object store hangs: each attempt gives up after requestTimeout without a byte.
    maxAttempts: c.maxAttempts ?? 3,
    requestHandler: {
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: MAX_SOCKETS, ...(ca ? { ca } : {}) }),
      connectionTimeout: c.connectTimeoutMs ?? 5_000,
      // Silence bounds every attempt: no byte sent or received for requestTimeout fails it (a hung object store,
      // a half-open link), also in the middle of a body. A total bound would also cut big part uploads on a slow
      // link; the SDK's own requestTimeout only logs a warning unless told to throw.
      socketTimeout: c.requestTimeoutMs ?? 10_000,
    },
  });
}

function credentials(c: S3StorageConfig): { accessKeyId: string; secretAccessKey: string } | undefined {
  if (c.accessKeyFile && c.secretKeyFile) {
    return { accessKeyId: readFileSync(c.accessKeyFile, 'utf8').trim(), secretAccessKey: readFileSync(c.secretKeyFile, 'utf8').trim() };
  }
  if (c.accessKeyEnv && c.secretKeyEnv) {
    return { accessKeyId: process.env[c.accessKeyEnv] ?? '', secretAccessKey: process.env[c.secretKeyEnv] ?? '' };
  }
  return undefined; // the SDK's chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles
}
