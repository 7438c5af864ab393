// The version of the store's format (blobs/sha256 files, the JSON documents, the S3 object names), which
// `sluice version` reports: it changes only when a sluice writes a store an older sluice cannot read.
export const STORE_FORMAT_VERSION = 1;
