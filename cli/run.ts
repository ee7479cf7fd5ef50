/**
 * `shuru run` and `shuru checkpoint create`: boot a throwaway sandbox, run one command (or an
 * interactive shell), hand back its output and exit code, then throw the disk away or save it
 * as a checkpoint.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { resolve } from "node:path";
import { AssetError, type AssetProgress, type GuestArch, parseArch } from "../assets/mod.ts";
import {
  type BootedSandbox,
  bootSandbox,
  buildPolicy,
  NetLog,
  type NetworkSettings as PolicySettings,
  RunnerError,
  type SandboxNetwork,
} from "../runner/mod.ts";
import { ConnectionError } from "../sandbox/mod.ts";
import { StoreError, validateName } from "../store/mod.ts";
import { type AccelChoice, parseAccel, VmError } from "../vm/mod.ts";
import {
  checkMount,
  loadConfig,
  type MountSpec,
  parseAddHost,
  parseExposeHost,
  parseMountSpec,
  parsePortMapping,
  pick,
  type PortMapping,
} from "./config.ts";
import { agentBackend } from "../control/agent_backend.ts";
import { ControlServer, serveStdio } from "../control/mod.ts";
import { liveCheckpointInfo, serialized } from "../supervisor/mod.ts";
import { attachAgentProcess } from "./attach.ts";
import { ProgressPrinter } from "./init.ts";
import { resolveSecrets } from "./secrets.ts";
import { UserError } from "./errors.ts";
import { VERSION } from "./version.ts";
import { homeLayout } from "./home.ts";
import { openHomeStore } from "./store.ts";

const DEFAULTS = { cpus: 2, memory: 2048, diskSize: 4096 };

function positiveInt(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) <= 0) {
      throw new UserError(`Invalid ${flag} "${value}": expected a positive whole number`);
    }
    return Number(value);
  };
}

/** Parses a size in MiB: `4096`, `512M`, `4G` (as the SDK passes it). */
function sizeMiB(flag: string) {
  return (value: string): number => {
    const m = /^(\d+)([MmGg]i?[Bb]?)?$/.exec(value);
    const n = m ? Number(m[1]) * (m[2] && /^[Gg]/.test(m[2]) ? 1024 : 1) : NaN;
    if (!(n > 0) || !Number.isSafeInteger(n)) {
      throw new UserError(`Invalid ${flag} "${value}": expected MiB (e.g. 4096) or 512M / 4G`);
    }
    return n;
  };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Adds the flags `run`, `start` and `checkpoint create` share. */
export function withRunFlags(cmd: Command) {
  return cmd
    .option("--cpus <n>", `virtual CPUs (default ${DEFAULTS.cpus})`, positiveInt("--cpus"))
    .option(
      "--memory <MiB>",
      `memory in MiB, or with a unit: 512M, 2G (default ${DEFAULTS.memory})`,
      sizeMiB("--memory"),
    )
    .option(
      "--disk-size <MiB>",
      "disk size in MiB (or 8G); the guest filesystem grows to fill it " +
        `(default ${DEFAULTS.diskSize})`,
      sizeMiB("--disk-size"),
    )
    .option("--from <checkpoint>", "start from this checkpoint instead of the base image")
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
        "other names do not resolve and literal IPs are refused",
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
      "also open private, loopback and link-local destinations (with --allow-net)",
    )
    .option(
      "--secret <NAME=VALUE@HOSTS>",
      "give the guest $NAME as a random placeholder; requests to HOSTS (comma-separated " +
        "patterns) carry the real value, which never enters the VM (repeatable; implies " +
        "--allow-net). NAME@HOSTS takes the value from the host's $NAME (stays out of ps)",
      collect,
    )
    .option(
      "--net-log <file>",
      "append one JSON line per guest connection (time, name, address, port, decision, bytes)",
    )
    .option("--config <file>", "config file (default ./shuru.json if it exists)")
    .option(
      "--accel <kvm|hvf|tcg|auto>",
      "CPU virtualization: kvm, hvf (macOS), tcg (emulation) or auto (KVM when it works; env " +
        "SHURU_ACCEL)",
    )
    .option(
      "--arch <x86_64|arm64>",
      "guest architecture (default: the checkpoint's with --from, else the host's); another " +
        "architecture than the host's runs emulated (slow), its guest image is built on first use",
    )
    .option("--install-deps", "install missing host packages with apt-get (root on Debian)")
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
  accel?: string;
  arch?: string;
  installDeps?: true;
  console?: true;
  verbose?: true;
  env?: string[];
  cwd?: string;
};

/** The run settings after merging flags, config file and defaults. */
export interface RunSettings {
  cpus: number;
  memoryMiB: number;
  diskSizeMiB: number;
  accel: AccelChoice;
  /** Guest architecture; absent: the checkpoint's (with `from`), else the host's. */
  arch?: GuestArch;
  from?: string;
  mounts: MountSpec[];
  ports: PortMapping[];
  command: string[] | undefined;
  env: Record<string, string>;
  cwd?: string;
  /** The guest network; absent: no NIC. */
  network?: NetworkSettings;
}

/** Network settings of a run (`--allow-net` and friends). */
export interface NetworkSettings extends PolicySettings {
  /** `--net-log` file (absolute). */
  netLog?: string;
}

/** Merges the network flags over the config; undefined when the guest gets no NIC. */
async function resolveNetwork(
  flags: RunFlags,
  config: Awaited<ReturnType<typeof loadConfig>>,
): Promise<NetworkSettings | undefined> {
  const secrets = await resolveSecrets(flags.secret ?? [], {
    ...(config.secrets ? { secrets: config.secrets } : {}),
    source: flags.config ?? "shuru.json",
  });
  const allowHosts = [...(config.network?.allow ?? []), ...(flags.allowHost ?? [])];
  // With an allow-list, a secret's hosts are allowed too: a value for a host the guest may not
  // reach would be useless. Without one every public name is open already.
  if (allowHosts.length > 0) {
    for (const h of secrets.flatMap((s) => s.hosts)) {
      if (!allowHosts.includes(h)) allowHosts.push(h);
    }
  }
  const addHosts: Record<string, string> = {};
  for (const spec of [...(config.network?.hosts ?? []), ...(flags.addHost ?? [])]) {
    const { name, ip } = parseAddHost(spec);
    addHosts[name] = ip;
  }
  const exposeHost = [...(config.expose_host ?? []), ...(flags.exposeHost ?? [])].map(
    parseExposeHost,
  );
  const seen = new Set<number>();
  for (const e of exposeHost) {
    if (seen.has(e.guestPort)) {
      throw new UserError(`Cannot expose host.shuru.internal:${e.guestPort} twice`);
    }
    seen.add(e.guestPort);
  }
  const allowNet = (flags.allowNet ?? config.allow_net ?? false) || allowHosts.length > 0 ||
    secrets.length > 0;
  const allowPrivate = flags.allowPrivate ?? config.allow_private ?? false;
  if (!allowNet && exposeHost.length === 0) {
    if (flags.netLog !== undefined) {
      throw new UserError("Cannot use --net-log without a network: add --allow-net");
    }
    return undefined;
  }
  const settings: NetworkSettings = {
    allowNet,
    allowHosts,
    addHosts,
    allowPrivate,
    exposeHost,
    ...(secrets.length > 0 ? { secrets } : {}),
    ...(flags.netLog !== undefined ? { netLog: resolve(flags.netLog) } : {}),
  };
  try {
    buildPolicy(settings); // validates every pattern and address now, before booting
  } catch (err) {
    throw new UserError((err as Error).message);
  }
  return settings;
}

/** Merges flags over the config file over defaults and validates the result. */
export async function resolveRunSettings(
  argv: string[],
  flags: RunFlags,
): Promise<RunSettings> {
  const config = await loadConfig(
    flags.config ?? "shuru.json",
    { required: flags.config !== undefined },
  );
  const network = await resolveNetwork(flags, config);
  const accelText = flags.accel ?? Deno.env.get("SHURU_ACCEL") ?? config.accel ?? "auto";
  let accel: RunSettings["accel"];
  try {
    accel = parseAccel(accelText);
  } catch (err) {
    throw new UserError((err as Error).message);
  }
  let arch: GuestArch | undefined;
  try {
    if (flags.arch !== undefined) arch = parseArch(flags.arch);
  } catch (err) {
    if (err instanceof AssetError) throw new UserError(err.message);
    throw err;
  }
  const allowHostWrites = flags.allowHostWrites ?? config.allow_host_writes ?? false;
  const mounts = [...(config.mounts ?? []), ...(flags.mount ?? [])].map(parseMountSpec);
  for (const m of mounts) checkMount(m, allowHostWrites);
  const ports = [...(config.ports ?? []), ...(flags.port ?? [])].map(parsePortMapping);
  const seen = new Set<number>();
  for (const p of ports) {
    if (seen.has(p.host)) throw new UserError(`Cannot forward host port ${p.host} twice`);
    seen.add(p.host);
  }
  const env: Record<string, string> = {};
  for (const kv of flags.env ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UserError(`Invalid -e "${kv}": expected KEY=VALUE`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  if (flags.cwd !== undefined && !flags.cwd.startsWith("/")) {
    throw new UserError(`Invalid --cwd "${flags.cwd}": must be an absolute guest path`);
  }
  const from = flags.from ?? config.from;
  const command = argv.length > 0 ? argv : config.command;
  return {
    cpus: pick(flags.cpus, config.cpus, DEFAULTS.cpus),
    memoryMiB: pick(flags.memory, config.memory, DEFAULTS.memory),
    diskSizeMiB: pick(flags.diskSize, config.disk_size, DEFAULTS.diskSize),
    accel,
    ...(arch !== undefined ? { arch } : {}),
    ...(from !== undefined ? { from } : {}),
    mounts: mounts.map((m) => ({ ...m, host: resolve(m.host) })),
    ports,
    command: command && command.length > 0 ? command : undefined,
    env,
    ...(flags.cwd !== undefined ? { cwd: flags.cwd } : {}),
    ...(network ? { network } : {}),
  };
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
  const server = new ControlServer(
    agentBackend(booted.sandbox, {
      checkpoint: serialized((name: string) => liveCheckpointInfo(booted, name)),
      shutdown: () => Promise.resolve(),
    }),
    { serverInfo: { name: "shuru", version: VERSION }, log: (l) => console.error(l) },
  );
  try {
    await Promise.race([serveStdio(server), booted.sandbox.closed]);
  } finally {
    await server.close();
  }
  return 0;
}

/** Opens the `--net-log` file for appending. */
async function openNetLog(path: string): Promise<NetLog> {
  try {
    return await NetLog.open(path);
  } catch (err) {
    throw new UserError(`Cannot open --net-log ${path}: ${(err as Error).message}`);
  }
}

/** Boots, runs, stops (saving as `saveAs` when given) and returns the command's exit code. */
async function runOnce(
  settings: RunSettings,
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
  let netLog: NetLog | undefined;
  try {
    let network: SandboxNetwork | undefined;
    if (settings.network) {
      const { netLog: netLogPath, ...policy } = settings.network;
      if (netLogPath !== undefined) netLog = await openNetLog(netLogPath);
      const file = netLog;
      network = {
        ...policy,
        ...netLinkFromEnv(),
        onBlocked: log,
        ...(file ? { onConnection: (r) => file.write(r) } : {}),
      };
    }
    booted = await bootSandbox({
      home,
      cpus: settings.cpus,
      memoryMiB: settings.memoryMiB,
      diskSizeMiB: settings.diskSizeMiB,
      accel: settings.accel,
      ...(settings.arch !== undefined ? { arch: settings.arch } : {}),
      ...(settings.from !== undefined ? { from: settings.from } : {}),
      mounts: settings.mounts,
      ...(network ? { network } : {}),
      ...(flags.installDeps ? { installDeps: true } : {}),
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
      const net = booted.network?.net;
      if (net) {
        log(`shuru: guest network over the ${net.transport ?? "stream"} link, MTU ${net.mtu}`);
      }
    }
    for (const p of settings.ports) {
      try {
        await booted.sandbox.forward(p.host, p.guest);
      } catch (err) {
        throw new UserError(
          `Cannot forward 127.0.0.1:${p.host}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    const started = performance.now();
    let code: number;
    try {
      code = flags.stdio
        ? await serveControlOnStdio(booted)
        : await attachAgentProcess(booted.sandbox, settings.command ?? ["/bin/sh"], {
          // A terminal gets an interactive PTY session; pipes are streamed.
          tty: Deno.stdin.isTerminal(),
          stdin: true,
          env: settings.env,
          ...(settings.cwd !== undefined ? { cwd: settings.cwd } : {}),
        });
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
    if (err instanceof RunnerError || err instanceof VmError || err instanceof StoreError) {
      throw new UserError(err.message, { exitCode: 125, cause: err });
    }
    throw err;
  } finally {
    await booted?.[Symbol.asyncDispose]();
    netLog?.close();
    Deno.removeSignalListener("SIGINT", handlers.SIGINT);
    Deno.removeSignalListener("SIGTERM", handlers.SIGTERM);
  }
}

/**
 * `SHURU_NET_LINK=datagram`: the guest NIC's frames travel as datagrams (the link a macOS host
 * uses) instead of the default stream; for tests and benchmarks (docs/network.md).
 */
function netLinkFromEnv(): { link?: "stream" | "datagram" } {
  const value = Deno.env.get("SHURU_NET_LINK");
  if (value === undefined || value === "") return {};
  if (value === "stream" || value === "datagram") return { link: value };
  throw new UserError(`Invalid SHURU_NET_LINK "${value}": expected stream or datagram`);
}

/** This process's peak resident set size in MiB (VmHWM), or "?" where /proc has none. */
function peakRssMiB(): string {
  try {
    const kib = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+)/)?.[1];
    return kib ? (Number(kib) / 1024).toFixed(0) : "?";
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
      const settings = await resolveRunSettings(argv, flags);
      if (flags.stdio && settings.command !== undefined && argv.length > 0) {
        throw new UserError("Cannot use --stdio with a command: the client sends the commands");
      }
      Deno.exitCode = await runOnce(settings, flags);
    });
  return cmd as unknown as Command;
}

/** Runs `argv` in a fresh sandbox and saves its disk as checkpoint `name` (refuses existing). */
export async function createCheckpoint(
  name: string,
  argv: string[],
  flags: RunFlags,
): Promise<number> {
  try {
    validateName(name);
  } catch (err) {
    throw new UserError((err as Error).message);
  }
  const store = await openHomeStore();
  if ((await store.list()).some((c) => c.name === name)) {
    throw new UserError(
      `Cannot create checkpoint ${name}: it already exists (delete it first with ` +
        `\`shuru checkpoint delete ${name}\`)`,
    );
  }
  const settings = await resolveRunSettings(guestArgv(argv), flags);
  if (settings.command === undefined && !Deno.stdin.isTerminal()) {
    throw new UserError(`Cannot create checkpoint ${name}: give a command after --`);
  }
  return await runOnce(settings, flags, name);
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
