// The real PostgreSQL and S3 (Ceph RGW) the scale-out suites run on: test/services/up.sh starts them and prints
// the SLUICE_TEST_* variables read here. Missing locally → a loud skip; missing under CI=true → a failure.
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import type { S3StorageConfig } from '../../src/config/config.js';
import { s3Client } from '../../src/store/s3/client.js';

export const SERVICES_HINT = 'eval "$(test/services/up.sh /tmp/sluice-services)" (needs Debian\'s postgresql, ceph-mon, ceph-osd, radosgw, ceph-common)';

export interface S3Env {
  endpoint: string;
  accessKey: string;
  secretKey: string;
}

export const s3Env: S3Env | undefined = process.env.SLUICE_TEST_S3_ENDPOINT
  ? { endpoint: process.env.SLUICE_TEST_S3_ENDPOINT, accessKey: process.env.SLUICE_TEST_S3_ACCESS_KEY ?? '', secretKey: process.env.SLUICE_TEST_S3_SECRET_KEY ?? '' }
  : undefined;
export const pgUrl: string | undefined = process.env.SLUICE_TEST_PG_URL;

/** True when every named service is configured; otherwise a banner (or, under CI, a throw) naming what is missing. */
export function requireServices(names: ReadonlyArray<'s3' | 'postgres'>, suite: string): boolean {
  const missing = names.filter((n) => (n === 's3' ? s3Env === undefined : pgUrl === undefined));
  if (missing.length === 0) return true;
  const what = missing.map((n) => (n === 's3' ? 'S3 (SLUICE_TEST_S3_ENDPOINT)' : 'PostgreSQL (SLUICE_TEST_PG_URL)')).join(' and ');
  if (process.env.CI === 'true') throw new Error(`${suite} needs ${what} (CI=true, so not skipping): .ci/run starts them with test/services/up.sh`);
  const bar = '!'.repeat(78);
  console.warn(`\n${bar}\n!!! SKIPPING ${suite}: no ${what}\n!!! start them with ${SERVICES_HINT}\n${bar}\n`);
  return false;
}

/** The storage.s3 config for the test RGW (env keys, path style). */
export function s3Config(bucket: string, prefix = ''): S3StorageConfig {
  if (!s3Env) throw new Error('no S3 test service');
  process.env.SLUICE_TEST_S3_ACCESS_KEY ??= s3Env.accessKey;
  return {
    endpoint: s3Env.endpoint, bucket, region: 'us-east-1', prefix, forcePathStyle: true,
    accessKeyEnv: 'SLUICE_TEST_S3_ACCESS_KEY', secretKeyEnv: 'SLUICE_TEST_S3_SECRET_KEY',
  };
}

/** A fresh bucket on the test RGW, and its removal with everything in it. */
export async function freshBucket(): Promise<{ bucket: string; client: S3Client; remove(): Promise<void> }> {
  const bucket = `sluice-t-${randomBytes(6).toString('hex')}`;
  const client = s3Client(s3Config(bucket));
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  return {
    bucket,
    client,
    remove: async () => {
      for (;;) {
        const got = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
        const keys = (got.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
        if (keys.length === 0) break;
        await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
      }
      await client.send(new DeleteBucketCommand({ Bucket: bucket }));
      client.destroy();
    },
  };
}

/** A fresh database on the test PostgreSQL (its URL), and its removal. */
export async function freshDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!pgUrl) throw new Error('no PostgreSQL test service');
  const name = `sluice_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(pgUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
