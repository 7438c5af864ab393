// The generated files of a release: the launcher, the systemd unit, the configs for an installed host and for
// the image (the default config with the store moved), and the trimmed package.json the bundled code runs under.
import { NODE_FLAGS } from './node-flags.js';
import type { PackageJson } from './source.js';

/**
 * Uses the runtime beside it, whatever `node` is (or is not) on PATH; follows a symlinked /usr/local/bin/sluice;
 * takes the installed host's config (/etc/sluice/sluice.yaml, as the unit does) unless SLUICE_CONFIG says otherwise.
 */
export const LAUNCHER = `#!/bin/sh
# sluice launcher: runs this release's own Node.js runtime; no node needs to be installed.
here=$(dirname "$(readlink -f "$0")")
if [ -z "\${SLUICE_CONFIG:-}" ] && [ -f /etc/sluice/sluice.yaml ]; then
  SLUICE_CONFIG=/etc/sluice/sluice.yaml
  export SLUICE_CONFIG
fi
exec "$here/../node/bin/node" ${NODE_FLAGS.join(' ')} "$here/../dist/src/main.js" "$@"
`;

/** The unit for /opt/sluice (a symlink to the unpacked release), a `sluice` system user and /var/lib/sluice. */
export const SYSTEMD_UNIT = `# sluice: read-only pull-through OCI registry mirror. Install: README, "Install on a disconnected host".
[Unit]
Description=sluice registry mirror
Documentation=file:///opt/sluice/README.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=sluice
Group=sluice
Environment=SLUICE_CONFIG=/etc/sluice/sluice.yaml
ExecStart=/opt/sluice/bin/sluice serve
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
# sluice drains downloads for up to 30 s on SIGTERM (SLUICE_SHUTDOWN_GRACE_MS).
TimeoutStopSec=45
# The store and the admin token (config: storage /var/lib/sluice, admin.tokenFile /var/lib/sluice/admin.token).
StateDirectory=sluice
StateDirectoryMode=0750
ReadWritePaths=/var/lib/sluice
UMask=0027
LimitNOFILE=65536
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RemoveIPC=yes
PrivateMounts=yes
ProtectProc=invisible
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
# Not MemoryDenyWriteExecute: V8's JIT needs writable executable memory.

[Install]
WantedBy=multi-user.target
`;

/**
 * The default config with the store (and with it the admin token) at `storePath`. Throws when the default
 * no longer has the two lines it rewrites, so a change to config/sluice.yaml cannot silently ship a store in /opt.
 */
export function configWithStore(defaultYaml: string, storePath: string): string {
  const out = defaultYaml
    .replace(/^storage: \.\/data /m, `storage: ${storePath} `)
    .replace(/^( +tokenFile: )\.\/data\/admin\.token/m, `$1${storePath}/admin.token`);
  if (!out.includes(`storage: ${storePath}`) || !out.includes(`tokenFile: ${storePath}/admin.token`)) {
    throw new Error('config/sluice.yaml no longer has `storage: ./data` and `tokenFile: ./data/admin.token`: update src/release/texts.ts');
  }
  return out;
}

/** What the bundled code needs from package.json (`type: module`) and what identifies it; no scripts. */
export function releasePackageJson(pkg: PackageJson): string {
  const { name, version, description, license, engines, dependencies } = pkg;
  return `${JSON.stringify({ name, version, description, license, type: 'module', engines, dependencies, bin: { sluice: 'bin/sluice' } }, null, 2)}\n`;
}
