/**
 * The supervisor: the detached process that owns one named sandbox. It boots the guest with
 * {@linkcode bootSandbox} (so it owns QEMU, which dies with it through pdeathsig, and the NBD
 * server, which lives in this process), serves the control protocol on
 * `<instance>/control.sock` (mode 0600), records itself in the registry, and stops the sandbox
 * on `shutdown`, SIGTERM/SIGINT, idle or lifetime timeout, or when the guest goes away.
 *
 * @module
 */

import { join } from "node:path";
import type { HomeLayout } from "../cli/home.ts";
import { VERSION } from "../cli/version.ts";
import { agentBackend } from "../control/agent_backend.ts";
import { ControlServer, listenControlSocket } from "../control/mod.ts";
import {
  type BootedSandbox,
  bootSandbox,
  describeNetwork,
  NetLog,
  type NetworkSettings,
  type SandboxMount,
} from "../runner/mod.ts";
import type { AccelChoice } from "../vm/mod.ts";
import type { GuestArch } from "../assets/mod.ts";
import { StopClock } from "./idle.ts";
import {
  claimName,
  logPath,
  recordPath,
  registryDir,
  removeRecord,
  type SandboxRecord,
  updateRecord,
} from "./registry.ts";

/** Everything the supervisor needs, passed from `shuru start` as one JSON argument. */
export interface SuperviseSpec {
  /** Sandbox name (validated, claimed by the supervisor). */
  name: string;
  /** Data home layout. */
  home: HomeLayout;
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Disk size in MiB. */
  diskSizeMiB: number;
  /** Accelerator choice. */
  accel: AccelChoice;
  /** Guest architecture (default: the checkpoint's, else the host's). */
  arch?: GuestArch;
  /** Start from this checkpoint. */
  from?: string;
  /** Host folders to share. */
  mounts: SandboxMount[];
  /** Ports to forward from 127.0.0.1. */
  ports: Array<{ host: number; guest: number }>;
  /** Guest network (`--allow-net` and friends); absent: no NIC. Blocked lines go to the log. */
  network?: NetworkSettings & { netLog?: string };
  /** Stop after this long without clients. */
  idleTimeoutMs?: number;
  /** Stop after this long in total. */
  timeoutMs?: number;
  /** Kernel messages on the console log. */
  verbose?: boolean;
}

/** Encodes a spec for the command line. */
export function encodeSpec(spec: SuperviseSpec): string {
  return new TextEncoder().encode(JSON.stringify(spec)).toBase64();
}

/** Decodes {@linkcode encodeSpec}'s output. */
export function decodeSpec(text: string): SuperviseSpec {
  const spec = JSON.parse(new TextDecoder().decode(Uint8Array.fromBase64(text)));
  if (typeof spec?.name !== "string" || typeof spec?.home?.root !== "string") {
    throw new TypeError("Cannot read the supervisor spec: not a spec");
  }
  return spec as SuperviseSpec;
}

/** The control socket of an instance folder. */
export function controlSocketIn(instanceDir: string): string {
  return join(instanceDir, "control.sock");
}

/** Result fields of a live checkpoint, as the control protocol's `checkpoint` returns them. */
export async function liveCheckpointInfo(
  booted: BootedSandbox,
  name: string,
): Promise<Record<string, unknown>> {
  const r = await booted.checkpoint(name);
  return {
    pause_ms: Math.round(r.pauseMs * 10) / 10,
    total_ms: Math.round(r.totalMs),
    hashed_blocks: r.saved.hashedBlocks,
    new_chunks: r.saved.newChunks,
    new_bytes: r.saved.newBytes,
    used_blocks: r.saved.usedBlocks,
  };
}

/** Serializes calls: one live checkpoint at a time. */
export function serialized<A extends unknown[], R>(
  fn: (...args: A) => Promise<R>,
): (...args: A) => Promise<R> {
  let tail: Promise<unknown> = Promise.resolve();
  return (...args) => {
    const run = tail.then(() => fn(...args));
    tail = run.catch(() => {});
    return run;
  };
}

/**
 * Runs the supervisor until the sandbox stops; returns the process exit code.
 * Logs go to `log` (the supervisor's stderr is its log file).
 */
export async function supervise(
  spec: SuperviseSpec,
  options: { log?: (line: string) => void } = {},
): Promise<number> {
  const log = options.log ??
    ((line: string) => console.error(`${new Date().toISOString()} ${line}`));
  const dir = registryDir(spec.home.root);
  const instanceDir = join(spec.home.instances, spec.name);
  let record: SandboxRecord;
  try {
    record = await claimName(dir, {
      name: spec.name,
      state: "starting",
      instanceDir,
      controlSocket: controlSocketIn(instanceDir),
      log: logPath(dir, spec.name),
      startedAt: new Date().toISOString(),
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      diskSizeMiB: spec.diskSizeMiB,
      from: spec.from ?? null,
      ports: spec.ports,
      network: describeNetwork(spec.network),
      idleTimeoutMs: spec.idleTimeoutMs ?? null,
      timeoutMs: spec.timeoutMs ?? null,
    });
  } catch (err) {
    log((err as Error).message);
    return 1;
  }
  log(`supervisor ${Deno.pid}: starting sandbox ${spec.name}`);
  const abort = new AbortController();
  let stopReason: ((why: string) => void) | undefined;
  const stopRequested = new Promise<string>((r) => (stopReason = r));
  const onSignal = (sig: Deno.Signal) => () => {
    abort.abort(new Error(`stopped by ${sig}`));
    stopReason?.(sig);
  };
  const handlers: Array<[Deno.Signal, () => void]> = [
    ["SIGTERM", onSignal("SIGTERM")],
    ["SIGINT", onSignal("SIGINT")],
    // No terminal to hang up (setsid), but never die of one.
    ["SIGHUP", () => {}],
  ];
  for (const [sig, fn] of handlers) Deno.addSignalListener(sig, fn);
  let booted: BootedSandbox | undefined;
  let failed = false;
  const timers: ReturnType<typeof setTimeout>[] = [];
  let netLog: NetLog | undefined;
  try {
    const { netLog: netLogPath, ...network } = spec.network ?? {};
    if (netLogPath !== undefined) netLog = await NetLog.open(netLogPath);
    const file = netLog;
    booted = await bootSandbox({
      home: spec.home,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      diskSizeMiB: spec.diskSizeMiB,
      accel: spec.accel,
      ...(spec.arch !== undefined ? { arch: spec.arch } : {}),
      ...(spec.from !== undefined ? { from: spec.from } : {}),
      mounts: spec.mounts,
      instanceId: spec.name,
      ...(spec.verbose ? { verbose: true } : {}),
      onNotice: log,
      ...(spec.network
        ? {
          network: {
            ...network,
            onBlocked: log,
            ...(file ? { onConnection: (r) => file.write(r) } : {}),
          },
        }
        : {}),
      signal: abort.signal,
    });
    const b = booted;
    log(`agent ready after ${b.timings.agentReady} ms`);
    for (const p of spec.ports) await b.sandbox.forward(p.host, p.guest);
    const startedAt = Date.now();
    const server = new ControlServer(
      agentBackend(b.sandbox, {
        checkpoint: serialized(async (name: string) => {
          const info = await liveCheckpointInfo(b, name);
          log(`checkpoint ${name}: ${JSON.stringify(info)}`);
          return info;
        }),
        shutdown: () => Promise.resolve(),
        info: () => ({
          sandbox: spec.name,
          cpus: spec.cpus,
          memory_mib: spec.memoryMiB,
          disk_size_mib: spec.diskSizeMiB,
          from: spec.from ?? null,
          started_at: new Date(startedAt).toISOString(),
        }),
      }),
      { serverInfo: { name: "shuru", version: VERSION }, log },
    );
    await using _socket = await listenControlSocket(server, record.controlSocket, {
      replace: true,
    });
    record = { ...record, state: "running", readyAt: new Date().toISOString() };
    await updateRecord(dir, record);
    log(`serving ${record.controlSocket}`);

    const stopClock = new StopClock(Date.now(), {
      ...(spec.idleTimeoutMs !== undefined ? { idleMs: spec.idleTimeoutMs } : {}),
      ...(spec.timeoutMs !== undefined ? { lifetimeMs: spec.timeoutMs } : {}),
    });
    const watchdog = new Promise<string>((resolve) => {
      if (!stopClock.active) return;
      timers.push(setInterval(() => {
        const why = stopClock.observe(server.sessionCount, Date.now());
        if (why) resolve(why);
      }, stopClock.checkEveryMs));
    });
    const reason = await Promise.race([
      server.shutdownRequested.then(() => "shutdown requested"),
      b.vm.exited.then((e) => `the VM exited (code ${e.code})`),
      b.sandbox.closed.then(() => "the agent connection closed"),
      stopRequested,
      watchdog,
    ]);
    log(`stopping: ${reason}`);
    record = { ...record, state: "stopping" };
    await updateRecord(dir, record).catch(() => {});
    await server.close();
    return 0;
  } catch (err) {
    failed = true;
    log(`cannot run sandbox ${spec.name}: ${(err as Error).message}`);
    return abort.signal.aborted ? 143 : 1;
  } finally {
    for (const t of timers) clearInterval(t);
    if (booted) {
      const result = await booted.stop().catch((err) => {
        log(`stop failed: ${(err as Error).message}`);
        return undefined;
      });
      if (result) log(`stopped (${result.exit.poweredOff ? "powered off" : "killed"})`);
    }
    netLog?.close();
    // A failed boot keeps its log for `shuru start` to show; a clean stop leaves nothing.
    if (failed) await Deno.remove(recordPath(dir, spec.name)).catch(() => {});
    else await removeRecord(dir, spec.name);
    for (const [sig, fn] of handlers) Deno.removeSignalListener(sig, fn);
  }
}
