// The command table: every `sluice` command with its arguments, options (value, sentence, default, environment),
// examples and handler. Parsing, help, usage errors, shell completion and the reference (src/cli/README.md) all come from it.
// Each handler is imported when its command runs: `serve` never loads tar or zstd, `--help` loads no handler at all.
import type { CommandTable, OptionSpec } from './args.js';

export const INTRO = 'sluice: a read-only, pull-through OCI registry mirror with an allowlist and sync windows, for air-gapped Talos Linux clusters.';

// One meaning per flag name, whichever command takes it.
const json: OptionSpec = { name: 'json', description: 'print the result as JSON on stdout, for scripts (no progress line)' };
const dryRun = (what: string): OptionSpec => ({ name: 'dry-run', description: `list what ${what}, change nothing` });
const platform = (what: string): OptionSpec => ({
  name: 'platform', value: 'os/arch,...', description: `the platforms of multi-platform images to ${what}, e.g. linux/amd64,linux/arm64`, default: 'platforms in the config',
});
const note: OptionSpec = { name: 'note', value: 'TEXT', description: 'why: recorded with the change and shown by allow ls and status' };

const EXPORT_FORMATS = ['dir', 'tar', 'tar.zst', 'talos-cache-flat', 'talos-cache-oci'];

export const COMMANDS: CommandTable = {
  serve: {
    summary: 'run the registry mirror and its admin API',
    description: 'SIGHUP reloads the TLS certificates; SIGTERM or SIGINT stops accepting connections and lets in-flight requests and downloads finish until the grace period ends.',
    env: [{ name: 'SLUICE_SHUTDOWN_GRACE_MS', description: 'how long a stop waits for in-flight requests and downloads before cutting them, in milliseconds', default: '30000' }],
    examples: [
      { command: 'serve --config /etc/sluice/sluice.yaml', comment: 'serve with the configuration of this host' },
      { command: 'serve', comment: 'serve with the configuration in SLUICE_CONFIG, or config/sluice.yaml of the installation' },
    ],
    run: async (args, config) => (await import('./serve-command.js')).serve(args, config),
  },
  import: {
    summary: 'import an OCI image layout, an export bundle (folder, .tar or .tar.zst) or a Talos image cache',
    args: 'PATH',
    description: 'Every blob is verified before anything is stored; a corrupt image is refused whole and the others still import. Progress is shown on a terminal.',
    options: [
      { name: 'as', value: 'REF', description: 'the full reference to store the single image of a layout under, when its index.json names none' },
      { name: 'allow', description: 'also allow what was imported: the rules of a sluice bundle, else one exact rule per image' },
    ],
    examples: [
      { command: 'import /media/usb/sluice.tar.zst --allow', comment: 'import a bundle carried across the gap, with the rules it was exported with' },
      { command: 'import ./pause-layout --as registry.k8s.io/pause:3.10', comment: 'import a one-image layout whose index.json carries no name' },
    ],
    run: async (args, config) => (await import('./import-command.js')).importCommand(args, config),
  },
  export: {
    summary: 'write stored images as a bundle or a Talos image cache, with a receipt beside it',
    args: 'OUT [RULE...]',
    description: 'Exports what the RULEs name, or everything on the allowlist. Every blob is re-hashed on its way out. Progress is shown on a terminal.',
    options: [
      {
        name: 'format', value: 'FORMAT', choices: EXPORT_FORMATS,
        description: `the form of what is written: ${EXPORT_FORMATS.slice(0, -1).join(', ')} or ${EXPORT_FORMATS.at(-1) ?? ''}; a Talos cache is a folder`,
        default: "from OUT's name: tar.zst for .tar.zst, tar for .tar, else dir",
      },
      { name: 'since', value: 'RECEIPT', description: 'leave out what the receipt of an earlier export already carried (an incremental bundle)' },
      platform('export'),
      { name: 'partial', description: 'export images with missing blobs too, and list them, instead of refusing' },
      json,
    ],
    examples: [
      { command: 'export /media/usb/sluice.tar.zst', comment: 'everything on the allowlist, as one compressed archive' },
      { command: 'export week2.tar --since week1.tar.receipt.json', comment: 'only what the export of last week did not carry' },
      { command: 'export ./cache --format talos-cache-flat --platform linux/amd64', comment: 'a Talos image cache for talosctl image cache-serve' },
    ],
    run: async (args, config) => (await import('./export-command.js')).exportCommand(args, config),
  },
  allow: {
    summary: 'edit the allowlist',
    run: async (args, config) => (await import('./commands.js')).allowCommand(args, config),
    subcommands: {
      add: {
        summary: 'allow images: HOST/NAME[:TAG] or HOST/NAME@sha256:HEX, with * and ** globs',
        args: 'RULE...',
        options: [note, json],
        examples: [
          { command: "allow add registry.k8s.io/pause:3.10 'ghcr.io/siderolabs/*:v1.12.*' --note 'talos 1.12'", comment: 'allow one tag, and every v1.12 patch release of the siderolabs images' },
        ],
      },
      rm: {
        summary: 'remove rules; rules the config seeds are refused (remove them from the config file and restart)',
        args: 'RULE...',
        aliases: ['remove'],
        options: [json],
        examples: [{ command: 'allow rm registry.k8s.io/pause:3.10', comment: 'stop allowing a tag (what is stored stays until gc)' }],
      },
      ls: {
        summary: 'list the rules, where they come from (config or store), who added them, when and why',
        aliases: ['list'],
        options: [json],
        examples: [{ command: 'allow ls --json', comment: 'the rules as JSON' }],
      },
      import: {
        summary: 'allow every reference in an image list, one per line (- reads standard input)',
        args: 'FILE|-',
        options: [note, json],
        examples: [{ command: 'allow import - < images.txt', comment: 'allow the images a Talos release needs (talosctl images default > images.txt)' }],
      },
    },
  },
  denied: {
    summary: 'what nodes asked for and were refused, as a table, JSON or allow add lines',
    options: [
      {
        name: 'format', value: 'FORMAT', choices: ['table', 'json', 'commands'],
        description: 'the form of what is written: table, json, or commands: one sluice allow add line per reference',
        default: 'table; json with --json',
      },
      json,
      { name: 'clear', description: 'empty the denied log' },
    ],
    examples: [
      { command: 'denied', comment: 'what was refused, most recent first' },
      { command: 'denied --format commands', comment: 'the commands that would allow it, to review and run' },
    ],
    run: async (args, config) => (await import('./commands.js')).deniedCommand(args, config),
  },
  window: {
    summary: 'open or close upstream access now, outside the schedule',
    run: async (args, config) => (await import('./window-commands.js')).windowCommand(args, config),
    subcommands: {
      open: {
        summary: 'open upstream access now for DURATION (e.g. 2h, 90m; at most 30 days)',
        args: 'DURATION',
        options: [{ ...note, description: 'why the window is open (required): recorded and shown by status' }, json],
        examples: [{ command: "window open 2h --note 'talos 1.12 upgrade'", comment: 'open upstream access for two hours' }],
      },
      close: {
        summary: 'end the manual window now',
        options: [json],
        examples: [{ command: 'window close', comment: 'close upstream access before the window ends' }],
      },
    },
  },
  status: {
    summary: 'upstream access, next window, store and allowlist counts, last sync',
    options: [
      { name: 'coverage', description: 'the readiness report instead: what is stored for every rule; exit 1 if anything allowed is incomplete' },
      json,
    ],
    examples: [
      { command: 'status', comment: 'whether upstream access is open, until when, and what is stored' },
      { command: 'status --coverage', comment: 'check that everything allowed is stored before disconnecting' },
    ],
    run: async (args, config) => (await import('./window-commands.js')).statusCommand(args, config),
  },
  sync: {
    summary: 'fetch every exact allowlisted reference now (needs an open window)',
    description: 'Through the running server when there is one, else in this process. Progress is shown on a terminal.',
    options: [dryRun('would be fetched'), platform('fetch'), json],
    examples: [
      { command: 'sync', comment: 'prefetch everything the allowlist names exactly' },
      { command: 'sync --dry-run', comment: 'list what would be fetched' },
    ],
    run: async (args, config) => (await import('./window-commands.js')).syncCommand(args, config),
  },
  talos: {
    summary: 'Talos node configuration',
    // Loaded when used: the other commands start without bcrypt and the YAML writer.
    run: async (args, config) => (await import('./talos-command.js')).talosCommand(args, config),
    subcommands: {
      patch: {
        summary: "print the machine-config patch pointing every registry ('*') at this mirror",
        options: [
          { name: 'form', value: 'FORM', choices: ['legacy', 'documents'], description: 'documents: Talos 1.12+ RegistryMirrorConfig documents; legacy: machine.registries', default: 'documents' },
          { name: 'endpoint', value: 'URL', description: 'the address nodes reach sluice at', default: 'the listen address, https when tls is set' },
          { name: 'ca', value: 'FILE', description: 'the CA the nodes trust for the endpoint, https only', default: 'the last certificate of tls.cert' },
          { name: 'client-cert', value: 'FILE', description: "the nodes' client certificate, with --client-key (required when tls.clientCA is set)" },
          { name: 'client-key', value: 'FILE', description: "the nodes' client key, with --client-cert" },
          { name: 'username', value: 'USER', description: 'the basic-auth user of the nodes, with --password-file (required when auth.htpasswd is set)' },
          { name: 'password-file', value: 'FILE', description: 'a file holding that user\'s password, checked against auth.htpasswd' },
          { name: 'verify', description: 'also add the ImageVerificationConfig that makes nodes require the site signature (documents form; needs signing in the config)' },
        ],
        examples: [
          { command: 'talos patch --endpoint https://sluice.lan:6000 > sluice-patch.yaml', comment: 'the patch for nodes that reach sluice at sluice.lan' },
          { command: 'talos patch --form legacy --endpoint http://10.5.0.1:6000', comment: 'the machine.registries form, for Talos before 1.12' },
          { command: 'talos patch --endpoint https://sluice.lan:6000 --verify', comment: 'the same, and nodes accept only images signed with the site key' },
        ],
      },
    },
  },
  sign: {
    summary: 'sign the stored images of these allowlist rules (default: all) with the site key, as signing.policy decides',
    args: '[RULE...]',
    description: 'Exit 1 if an image is left unsigned or a rule has nothing stored.',
    options: [json],
    examples: [
      { command: 'sign', comment: 'sign everything the allowlist admits' },
      { command: 'sign registry.k8s.io/pause:3.10', comment: 'sign the images of one rule' },
    ],
    run: async (args, config) => (await import('./sign-command.js')).signCommand(args, config),
  },
  signing: {
    summary: 'the site signing key',
    run: async (args, config) => (await import('./signing-command.js')).signingCommand(args, config),
    subcommands: {
      init: {
        summary: 'write a new ECDSA P-256 site key (mode 0600, never over an existing file) and FILE.pub; print the public key',
        options: [{ name: 'key', value: 'FILE', description: 'where to write the private key; the public key goes to FILE.pub', default: 'signing.key in the config' }],
        examples: [{ command: 'signing init --key /etc/sluice/site.key', comment: 'make the site key, then set signing.key to it in the config' }],
      },
    },
  },
  gc: {
    summary: 'remove blobs no allowlist rule keeps (see gc.keep and gcGrace in the config)',
    description: 'Through the running server when there is one (it keeps serving meanwhile), else in this process.',
    options: [dryRun('would be removed and how many bytes'), json],
    examples: [
      { command: 'gc --dry-run', comment: 'what would be removed, and how many bytes' },
      { command: 'gc', comment: 'remove it' },
    ],
    run: async (args, config) => (await import('./gc-command.js')).gcCommand(args, config),
  },
  verify: {
    summary: 're-hash every blob; --repair quarantines corrupt ones so they are refetched',
    description: 'Also lists tags whose manifest is absent and manifests whose blobs are absent. Exit 1 while a corrupt blob (unrepaired) or a dangling tag remains. Progress is shown on a terminal.',
    options: [{ name: 'repair', description: 'quarantine corrupt blobs; the next allowed request in a window refetches them' }, json],
    examples: [
      { command: 'verify', comment: 'check every blob in the store' },
      { command: 'verify --repair', comment: 'check, and take corrupt blobs out of service' },
    ],
    run: async (args, config) => (await import('./verify-command.js')).verifyCommand(args, config),
  },
  version: {
    summary: 'this release, its source revision, the Node.js runtime and the store format (also: sluice --version)',
    options: [json],
    examples: [
      { command: 'version', comment: 'what is installed here' },
      { command: 'version --json', comment: 'the same as JSON, for inventory scripts (sluice --version --json too)' },
    ],
    run: async (args) => (await import('./version-command.js')).versionCommand(args),
  },
  completion: {
    summary: 'print the shell completion script for bash, zsh or fish',
    args: 'bash|zsh|fish',
    examples: [
      { command: 'completion bash > /etc/bash_completion.d/sluice', comment: 'complete commands and flags in bash' },
      { command: 'completion zsh > "${fpath[1]}/_sluice"', comment: 'in zsh (a folder of $fpath)' },
      { command: 'completion fish > sluice.fish', comment: 'in fish (then move it to ~/.config/fish/completions/)' },
    ],
    run: async (args) => (await import('./completion.js')).completionCommand(COMMANDS, args),
  },
  docs: {
    summary: 'rewrite the command reference (src/cli/README.md) and the command table of README.md from this table',
    hidden: true,
    options: [{ name: 'check', description: 'change nothing; exit 1 if either differs from what the table generates' }],
    run: async (args) => (await import('./reference.js')).docsCommand(COMMANDS, args),
  },
};
