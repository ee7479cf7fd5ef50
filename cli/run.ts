/**
 * `shuru run` and `shuru checkpoint create`: boot a throwaway sandbox, run one command (or an
 * interactive shell), hand back its output and exit code, then throw the disk away or save it
 * as a checkpoint.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import type { AssetProgress } from "../assets/mod.ts";
import type { ImageProgress } from "../image/mod.ts";
import {
  type BootedSandbox,
  bootSandbox,
  type LinkTransport,
  type RemoteStart,
} from "../runner/mod.ts";
import { applySpawnDefaults, ConnectionError } from "../agent/mod.ts";
import {
  configLayer,
  loadConfig,
  parseAddHost,
  parseEnvPair,
  parseExposeHost,
  parseMountSpec,
  parsePortMapping,
  parsePositiveInt,
  parseSizeMiB,
  parseSpecLayer,
  resolveSpec,
  type SandboxSpec,
  SPEC_DEFAULTS,
  SpecError,
  type SpecLayer,
} from "../spec/mod.ts";
import { serveControl } from "../control/mod.ts";
import { attachAgentProcess } from "./attach.ts";
import { ProgressPrinter } from "./init.ts";
import { resolveSecrets } from "./secrets.ts";
import { UserError } from "./errors.ts";
import { homeLayout, nameProblem } from "../host/mod.ts";
import { libc } from "../ffi/mod.ts";
import { openHomeStore } from "./store.ts";

function positiveInt(flag: string) {
  return (value: string): number => parsePositiveInt(flag, value);
}

/** Parses a size in MiB: `4096`, `512M`, `4G` (as the SDK passes it). */
function sizeMiB(flag: string) {
  return (value: string): number => parseSizeMiB(flag, value);
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Adds the flags `run`, `start` and `checkpoint create` share. */
export function withRunFlags(cmd: Command) {
  return cmd
    .option("--cpus <n>", `virtual CPUs (default ${SPEC_DEFAULTS.cpus})`, positiveInt("--cpus"))
    .option(
      "--memory <MiB>",
      `memory in MiB, or with a unit: 512M, 2G (default ${SPEC_DEFAULTS.memoryMiB})`,
      sizeMiB("--memory"),
    )
    .option(
      "--disk-size <MiB>",
      "disk size in MiB (or 8G); the guest filesystem grows to fill it " +
        `(default ${SPEC_DEFAULTS.diskSizeMiB})`,
      sizeMiB("--disk-size"),
    )
    .option(
      "--from <checkpoint>",
      "start from this checkpoint instead of the base image; a registry reference " +
        "(registry/repo:tag) boots without downloading it: chunks are fetched on first read",
    )
    .option(
      "--image <REF>",
      "use an OCI image as the root filesystem: a registry reference (python:3.12-slim, " +
        "localhost:5000/app:1), oci:DIR[:TAG] or docker-archive:FILE; converted once per disk " +
        "size and cached; its Env, WorkingDir, User and Entrypoint/Cmd apply (docs/images.md)",
    )
    .option(
      "--kernel <PATH>",
      "boot this kernel instead of shuru's: a PVH ELF (vmlinux) or a bzImage (env SHURU_KERNEL)",
    )
    .option(
      "--initrd <PATH>",
      "boot this initramfs instead of shuru's; it must mount the root disk and run " +
        "/sbin/shuru-init (env SHURU_INITRD)",
    )
    .option(
      "--rootfs <PATH>",
      "use this ext4 image as the root filesystem (never written; runs see a copy-on-write " +
        "layer); it needs nothing of shuru's (env SHURU_ROOTFS)",
    )
    .option(
      "--insecure-registry <HOST>",
      "allow plain HTTP to this registry host (repeatable; loopback registries always may)",
      collect,
    )
    .option(
      "--mount <HOST:GUEST[:ro|:rw]>",
      "share a host folder (repeatable); read-only by default: guest writes land in a " +
        "throwaway layer; :rw needs --allow-host-writes",
      collect,
    )
    .option("--allow-host-writes", "allow :rw mounts (the guest may change host files)")
    .option(
      "-p, --port <HOST:GUEST>",
      "forward 127.0.0.1:HOST to the guest's port GUEST (repeatable)",
      collect,
    )
    .option(
      "--allow-net",
      "give the guest a network: public destinations only (private ranges, loopback and " +
        "cloud metadata stay closed); every refused connection prints `shuru: blocked ...`",
    )
    .option(
      "--allow-host <PATTERN>",
      "allow only these names (example.com, *.example.com; repeatable; implies --allow-net); " +
        "other names do not resolve, literal IPs are refused, and the name inside each TLS " +
        "hello and HTTP request must be allowed too",
      collect,
    )
    .option(
      "--add-host <NAME:IP>",
      "make NAME resolve to IP on the host's side (repeatable), e.g. api.test:127.0.0.1 " +
        "reaches the host's loopback; allows nothing by itself",
      collect,
    )
    .option(
      "--expose-host <PORT[:HOSTPORT]>",
      "let the guest reach the host's 127.0.0.1:HOSTPORT at host.shuru.internal:PORT " +
        "(repeatable); alone it gives a network that reaches only those ports",
      collect,
    )
    .option(
      "--allow-private",
      "also open private, loopback, link-local and other special destinations, also for " +
        "allowed names that resolve there (with --allow-net)",
    )
    .option(
      "--secret <NAME=VALUE@HOSTS>",
      "give the guest $NAME as a random placeholder; HTTPS requests to HOSTS (comma-separated " +
        "patterns) carry the real value in credential headers, and it never enters the VM " +
        "(repeatable; implies --allow-net). NAME@HOSTS takes the value from the host's $NAME " +
        "(stays out of ps). After the hosts, :inject=header,query,body also puts it in the " +
        "query or body, :allow_http sends it over plain HTTP too (docs/secrets.md)",
      collect,
    )
    .option(
      "--net-log <file>",
      "append one JSON line per guest connection (time, name, address, port, decision, bytes)",
    )
    .option("--config <file>", "config file (default ./shuru.json if it exists)")
    .option(
      "--spec <json>",
      "settings as one JSON object with the fields of a SandboxSpec (cpus, memoryMiB, " +
        "network: {allowNet}, ...), as the SDK passes them; flags win over it, it over the config",
    )
    .option(
      "--accel <kvm|tcg|auto>",
      "CPU virtualization: kvm, tcg (emulation) or auto (KVM when it works; env SHURU_ACCEL)",
    )
    .option(
      "--arch <x86_64|arm64>",
      "guest architecture (default: the checkpoint's with --from, else the host's); another " +
        "architecture than the host's runs emulated (slow), its guest image is built on first use",
    )
    .option(
      "--backend <vz|qemu>",
      "VM backend: vz (Apple's Virtualization.framework, macOS only) or qemu " +
        "(default: vz on macOS, qemu elsewhere; env SHURU_BACKEND)",
    )
    .option(
      "--install-deps",
      "install missing host packages with apt-get (Debian; the default as root)",
    )
    .option("--no-install-deps", "only name missing host packages (one apt-get line), as root too")
    .option("--console", "attach to the guest's serial console log while it runs (debugging)")
    .option("-v, --verbose", "show boot progress, kernel messages and timings")
    .option(
      "-e, --env <KEY=VALUE>",
      "set an environment variable in the guest (repeatable)",
      collect,
    )
    .option("--cwd <dir>", "working directory in the guest (absolute)");
}

/**
 * The guest command from commander's variadic argument. With pass-through options commander
 * keeps a `--` that follows an earlier positional (`checkpoint create NAME -- cmd`); it only
 * separates our flags from the command, so it is dropped here.
 */
export function guestArgv(argv: string[]): string[] {
  return argv[0] === "--" ? argv.slice(1) : argv;
}

const COMMAND_ARG = "command to run (after --); default: an interactive /bin/sh";

/** The flags of {@linkcode withRunFlags}. */
export type RunFlags = {
  cpus?: number;
  memory?: number;
  diskSize?: number;
  from?: string;
  image?: string;
  kernel?: string;
  initrd?: string;
  rootfs?: string;
  insecureRegistry?: string[];
  mount?: string[];
  allowHostWrites?: true;
  port?: string[];
  allowNet?: true;
  allowHost?: string[];
  addHost?: string[];
  exposeHost?: string[];
  allowPrivate?: true;
  secret?: string[];
  netLog?: string;
  config?: string;
  spec?: string;
  accel?: string;
  backend?: string;
  arch?: string;
  installDeps?: boolean;
  console?: true;
  verbose?: true;
  env?: string[];
  cwd?: string;
};

/** The flags' settings as a spec layer (`argv`: the guest command, if any). */
function flagsLayer(argv: string[], flags: RunFlags): SpecLayer {
  const addHosts: Record<string, string> = {};
  for (const spec of flags.addHost ?? []) {
    const { name, ip } = parseAddHost(spec);
    addHosts[name] = ip;
  }
  let env: Record<string, string> = {};
  for (const kv of flags.env ?? []) env = parseEnvPair("-e", kv, env);
  return {
    ...(flags.cpus !== undefined ? { cpus: flags.cpus } : {}),
    ...(flags.memory !== undefined ? { memoryMiB: flags.memory } : {}),
    ...(flags.diskSize !== undefined ? { diskSizeMiB: flags.diskSize } : {}),
    ...(flags.accel !== undefined ? { accel: flags.accel as SandboxSpec["accel"] } : {}),
    ...(flags.backend !== undefined ? { backend: flags.backend as SandboxSpec["backend"] } : {}),
    ...(flags.arch !== undefined ? { arch: flags.arch as SandboxSpec["arch"] } : {}),
    ...(flags.from !== undefined ? { from: flags.from } : {}),
    ...(flags.image !== undefined ? { image: flags.image } : {}),
    ...(flags.kernel !== undefined ? { kernel: flags.kernel } : {}),
    ...(flags.initrd !== undefined ? { initrd: flags.initrd } : {}),
    ...(flags.rootfs !== undefined ? { rootfs: flags.rootfs } : {}),
    ...(flags.insecureRegistry ? { insecureRegistries: flags.insecureRegistry } : {}),
    ...(argv.length > 0 ? { command: argv } : {}),
    mounts: (flags.mount ?? []).map(parseMountSpec),
    ports: (flags.port ?? []).map(parsePortMapping),
    env,
    ...(flags.cwd !== undefined ? { cwd: flags.cwd } : {}),
    network: {
      ...(flags.allowNet ? { allowNet: true } : {}),
      ...(flags.allowPrivate ? { allowPrivate: true } : {}),
      allowHosts: flags.allowHost ?? [],
      addHosts,
      exposeHost: (flags.exposeHost ?? []).map(parseExposeHost),
      ...(flags.netLog !== undefined ? { netLog: flags.netLog } : {}),
    },
  };
}

/** The `--spec` JSON as a spec layer. */
function specFlagLayer(text: string | undefined): SpecLayer {
  if (text === undefined) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SpecError("invalid_setting", `Invalid --spec: not JSON: ${(err as Error).message}`);
  }
  return parseSpecLayer(value, "--spec");
}

/** `$SHURU_ACCEL`, `$SHURU_BACKEND` and the boot files' variables as a spec layer. */
function envLayer(): SpecLayer {
  const accel = Deno.env.get("SHURU_ACCEL");
  const backend = Deno.env.get("SHURU_BACKEND");
  const kernel = Deno.env.get("SHURU_KERNEL");
  const initrd = Deno.env.get("SHURU_INITRD");
  const rootfs = Deno.env.get("SHURU_ROOTFS");
  return {
    ...(accel !== undefined ? { accel: accel as SandboxSpec["accel"] } : {}),
    ...(backend ? { backend: backend as SandboxSpec["backend"] } : {}),
    ...(kernel ? { kernel } : {}),
    ...(initrd ? { initrd } : {}),
    ...(rootfs ? { rootfs } : {}),
  };
}

/**
 * The sandbox the flags, `--spec`, the `$SHURU_*` variables and the config file describe
 * (in that order of precedence), with the secrets resolved and every setting checked.
 */
export async function resolveRunSettings(
  argv: string[],
  flags: RunFlags,
  extra: SpecLayer = {},
): Promise<SandboxSpec> {
  const config = await loadConfig(
    flags.config ?? "shuru.json",
    { required: flags.config !== undefined },
  );
  const secrets = await resolveSecrets(flags.secret ?? [], {
    ...(config.secrets ? { secrets: config.secrets } : {}),
    source: flags.config ?? "shuru.json",
  });
  return resolveSpec([
    flagsLayer(argv, flags),
    extra,
    specFlagLayer(flags.spec),
    envLayer(),
    configLayer(config),
    secrets.length > 0 ? { network: { secrets } } : {},
  ], { allowHostWrites: flags.allowHostWrites ?? config.allow_host_writes ?? false });
}

/** Asset progress for run and start: silent while the assets are current. */
export function progressPrinter(): (event: AssetProgress) => void {
  return new ProgressPrinter({ quietUnderMs: 1000 }).onProgress;
}

/**
 * `run --stdio`: the control protocol on stdin/stdout for this sandbox (the `ready`
 * notification first), until stdin closes or a client asks for `shutdown`. `checkpoint` saves
 * live and the session goes on.
 */
async function serveControlOnStdio(booted: BootedSandbox): Promise<number> {
  await using service = await serveControl(booted.agent, {
    stdio: true,
    checkpoint: (name) => booted.checkpoint(name),
    shutdown: () => Promise.resolve(),
    spawnDefaults: booted.defaults,
  });
  await service.done;
  return 0;
}

/** Boots, runs, stops (saving as `saveAs` when given) and returns the command's exit code. */
async function runOnce(
  spec: SandboxSpec,
  flags: RunFlags & { stdio?: true },
  saveAs?: string,
): Promise<number> {
  const home = homeLayout();
  const verbose = flags.verbose === true;
  const log = (line: string) => console.error(line);
  const abort = new AbortController();
  let booted: BootedSandbox | undefined;
  let interrupted = 0;
  const onSignal = (sig: "SIGINT" | "SIGTERM") => () => {
    interrupted = sig === "SIGINT" ? 130 : 143;
    abort.abort(new UserError(`interrupted by ${sig}`, { exitCode: interrupted }));
    // Tear down at once; the main flow then notices and exits with 128+N.
    void booted?.[Symbol.asyncDispose]();
  };
  const handlers = { SIGINT: onSignal("SIGINT"), SIGTERM: onSignal("SIGTERM") };
  // With a terminal in raw mode, Ctrl-C reaches the guest as a byte, not as SIGINT here.
  Deno.addSignalListener("SIGINT", handlers.SIGINT);
  Deno.addSignalListener("SIGTERM", handlers.SIGTERM);
  let remote: RemoteStart | undefined;
  try {
    booted = await bootSandbox(spec, {
      home,
      net: { onBlocked: log, ...netLinkFromEnv() },
      onRemote: (r) => remote = r,
      onImageProgress: imageProgressPrinter(),
      ...(flags.installDeps !== undefined ? { installDeps: flags.installDeps } : {}),
      ...(verbose ? { verbose: true } : {}),
      onProgress: progressPrinter(),
      onNotice: log,
      ...(flags.console ? { onConsoleLine: (l: string) => log(`[console] ${l}`) } : {}),
      signal: abort.signal,
    });
    if (verbose) {
      const t = booted.timings;
      log(
        `shuru: boot: assets ${t.assets} ms, device ${t.device} ms, vm ${t.vmStarted} ms, ` +
          `agent ready ${t.agentReady} ms, mounts ${t.mounted} ms`,
      );
      const phases = Object.entries(booted.vm.phases).map(([k, v]) => `${k} ${Math.round(v)}`);
      log(`shuru: guest phases (ms after QEMU start): ${phases.join(", ")}`);
      if (booted.vm.confinement) log(`shuru: ${booted.vm.confinement}`);
      const net = booted.network?.net;
      if (net) {
        log(`shuru: guest network over the ${net.transport ?? "stream"} link, MTU ${net.mtu}`);
      }
    }
    const started = performance.now();
    let code: number;
    try {
      code = flags.stdio
        ? await serveControlOnStdio(booted)
        : await attachUserCommand(booted, spec);
    } catch (err) {
      if (interrupted) return interrupted;
      if (err instanceof ConnectionError) {
        throw new UserError(`Lost the guest agent: ${err.message}`, { exitCode: 125 });
      }
      throw err;
    }
    if (verbose) log(`shuru: command ran ${Math.round(performance.now() - started)} ms`);
    const stopStarted = performance.now();
    const result = await booted.stop(saveAs !== undefined ? { saveAs } : {});
    if (verbose && remote) {
      const s = remote.stats;
      log(
        `shuru: lazy start from ${remote.ref}@${remote.digest}: fetched ${s.fetchedChunks} ` +
          `chunks (${s.fetchedBytes} bytes) in ${s.requests} requests; ${s.localReads} ` +
          "reads were local",
      );
    }
    if (verbose) {
      log(`shuru: shutdown ${Math.round(performance.now() - stopStarted)} ms`);
      log(`shuru: peak RSS ${peakRssMiB()} MiB (this process; QEMU not included)`);
    }
    if (result.saved) {
      log(
        `shuru: saved checkpoint ${saveAs} (${result.saved.newChunks} new chunks, ` +
          `${(result.saved.newBytes / 1048576).toFixed(1)} MiB new)`,
      );
    }
    return interrupted || code;
  } catch (err) {
    if (interrupted) return interrupted;
    throw err;
  } finally {
    await booted?.[Symbol.asyncDispose]();
    Deno.removeSignalListener("SIGINT", handlers.SIGINT);
    Deno.removeSignalListener("SIGTERM", handlers.SIGTERM);
  }
}

/**
 * The command of a run with the image's defaults: the given command, else the image's
 * Entrypoint + Cmd, else `/bin/sh`; `-e` over the image's Env; `--cwd` over its WorkingDir; as
 * its User.
 */
async function attachUserCommand(booted: BootedSandbox, spec: SandboxSpec): Promise<number> {
  const d = booted.defaults;
  const command = spec.command ?? (d.command.length > 0 ? d.command : ["/bin/sh"]);
  const cmd = applySpawnDefaults(d, command, {
    env: spec.env,
    ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
  });
  const { exitCode } = await attachAgentProcess(booted.agent, cmd.argv, {
    // A terminal gets an interactive PTY session; pipes are streamed.
    tty: Deno.stdin.isTerminal(),
    stdin: true,
    env: cmd.env,
    ...(cmd.cwd !== undefined ? { cwd: cmd.cwd } : {}),
  });
  return exitCode;
}

/** Image pull and conversion progress on stderr, one line each. */
export function imageProgressPrinter(): (p: ImageProgress) => void {
  return (p) => console.error(`shuru: image: ${p.text}`);
}

/**
 * `SHURU_NET_LINK=datagram`: the guest NIC's frames travel as datagrams (the link a macOS host
 * uses) instead of the default stream; for tests and benchmarks (docs/network.md).
 */
function netLinkFromEnv(): { link?: LinkTransport } {
  const value = Deno.env.get("SHURU_NET_LINK");
  if (value === undefined || value === "") return {};
  if (value === "stream" || value === "datagram") return { link: value };
  throw new UserError(`Invalid SHURU_NET_LINK "${value}": expected stream or datagram`);
}

/** This process's peak resident set size in MiB (`getrusage`), or "?" when it cannot tell. */
function peakRssMiB(): string {
  try {
    return (libc.peakResidentBytes() / (1024 * 1024)).toFixed(0);
  } catch {
    return "?";
  }
}

/** Builds `shuru run`. */
export function runCommand(): Command {
  const cmd = withRunFlags(
    new Command("run").description(
      "Boot a throwaway Linux VM, run a command in it and return its output and exit code.\n" +
        "The disk resets on the next run; save it with `shuru checkpoint create`.\n" +
        "Without a command: an interactive shell (a PTY when stdin is a terminal).\n" +
        "Settings come from flags, then ./shuru.json (or --config), then defaults.\n" +
        "Example: shuru run --cpus 2 --mount ./src:/work -- python3 /work/x.py",
    ),
  )
    .option(
      "--stdio",
      "speak the control protocol (JSON-RPC 2.0, one message a line) on stdin/stdout instead " +
        "of running a command; ends when stdin closes (docs/control_protocol.md)",
    )
    .argument("[command...]", COMMAND_ARG)
    .passThroughOptions()
    .action(async (rawArgv, flags) => {
      const argv = guestArgv(rawArgv);
      const spec = await resolveRunSettings(argv, flags);
      if (flags.stdio && spec.command !== undefined && argv.length > 0) {
        throw new UserError("Cannot use --stdio with a command: the client sends the commands");
      }
      Deno.exitCode = await runOnce(spec, flags);
    });
  return cmd as unknown as Command;
}

/** Runs `argv` in a fresh sandbox and saves its disk as checkpoint `name` (refuses existing). */
export async function createCheckpoint(
  name: string,
  argv: string[],
  flags: RunFlags,
): Promise<number> {
  const problem = nameProblem("checkpoint", name);
  if (problem) throw new UserError(problem);
  const store = await openHomeStore();
  if ((await store.list()).some((c) => c.name === name)) {
    throw new UserError(
      `Cannot create checkpoint ${name}: it already exists (delete it first with ` +
        `\`shuru checkpoint delete ${name}\`)`,
    );
  }
  const spec = await resolveRunSettings(guestArgv(argv), flags);
  if (spec.command === undefined && !Deno.stdin.isTerminal()) {
    throw new UserError(`Cannot create checkpoint ${name}: give a command after --`);
  }
  return await runOnce(spec, flags, name);
}

/** Builds `shuru checkpoint create`. */
export function checkpointCreateCommand(): Command {
  const cmd = withRunFlags(
    new Command("create")
      .description(
        "Run a command in a sandbox, then save its disk as checkpoint NAME (refuses an " +
          "existing name). Later: shuru run --from NAME.\n" +
          "Example: shuru checkpoint create py-deps -- pip install requests",
      ),
  )
    .argument("<name>", "name of the new checkpoint")
    .argument("[command...]", COMMAND_ARG)
    .action(async (name, argv, flags) => {
      Deno.exitCode = await createCheckpoint(name, argv, flags);
    });
  return cmd as unknown as Command;
}
