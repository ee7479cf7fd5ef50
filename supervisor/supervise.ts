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
import { type HomeLayout, sandboxControlSocket } from "../host/mod.ts";
import { serveControl } from "../control/mod.ts";
import { type BootedSandbox, bootSandbox, describeNetwork } from "../runner/mod.ts";
import type { SandboxSpec } from "../spec/mod.ts";
import { StopClock } from "./idle.ts";
import {
  claimName,
  logPath,
  recordPath,
  removeRecord,
  type SandboxRecord,
  updateRecord,
} from "./registry.ts";

/**
 * Everything the supervisor needs, passed from `shuru start` as one JSON argument: the sandbox's
 * spec (carried unchanged to the runner), its name and the data home.
 */
export interface SuperviseSpec extends SandboxSpec {
  /** Sandbox name (validated, claimed by the supervisor). */
  name: string;
  /** Data home layout. */
  home: HomeLayout;
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
  const dir = spec.home.sandboxes;
  const instanceDir = join(spec.home.instances, spec.name);
  let record: SandboxRecord;
  try {
    record = await claimName(dir, {
      name: spec.name,
      state: "starting",
      instanceDir,
      controlSocket: sandboxControlSocket(spec.home, spec.name),
      log: logPath(dir, spec.name),
      startedAt: new Date().toISOString(),
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      diskSizeMiB: spec.diskSizeMiB,
      from: spec.from ?? null,
      image: spec.image ?? null,
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
  try {
    booted = await bootSandbox(spec, {
      home: spec.home,
      instanceId: spec.name,
      net: { onBlocked: log },
      ...(spec.verbose ? { verbose: true } : {}),
      onNotice: log,
      signal: abort.signal,
    });
    const b = booted;
    log(`agent ready after ${b.timings.agentReady} ms`);
    const startedAt = Date.now();
    await using service = await serveControl(b.agent, {
      listen: record.controlSocket,
      replace: true,
      log,
      checkpoint: async (name) => {
        const r = await b.checkpoint(name);
        log(
          `checkpoint ${name}: paused ${r.pauseMs.toFixed(1)} ms, total ${
            Math.round(r.totalMs)
          } ms, ` +
            `${r.saved.newChunks} new chunks (${r.saved.newBytes} bytes)`,
        );
        return r;
      },
      shutdown: () => Promise.resolve(),
      spawnDefaults: b.defaults,
      info: () => ({
        sandbox: spec.name,
        cpus: spec.cpus,
        memory_mib: spec.memoryMiB,
        disk_size_mib: spec.diskSizeMiB,
        from: spec.from ?? null,
        image: b.defaults.image ?? null,
        exposed_ports: b.defaults.exposedPorts,
        started_at: new Date(startedAt).toISOString(),
      }),
    });
    record = {
      ...record,
      state: "running",
      readyAt: new Date().toISOString(),
      image: b.defaults.image ?? null,
      exposedPorts: b.defaults.exposedPorts,
    };
    await updateRecord(dir, record);
    log(`serving ${record.controlSocket}`);

    const stopClock = new StopClock(Date.now(), {
      ...(spec.idleTimeoutMs !== undefined ? { idleMs: spec.idleTimeoutMs } : {}),
      ...(spec.timeoutMs !== undefined ? { lifetimeMs: spec.timeoutMs } : {}),
    });
    const watchdog = new Promise<string>((resolve) => {
      if (!stopClock.active) return;
      timers.push(setInterval(() => {
        const why = stopClock.observe(service.server.sessionCount, Date.now());
        if (why) resolve(why);
      }, stopClock.checkEveryMs));
    });
    const reason = await Promise.race([
      service.done,
      b.vm.exited.then((e) => `the VM exited (code ${e.code})`),
      stopRequested,
      watchdog,
    ]);
    log(`stopping: ${reason}`);
    record = { ...record, state: "stopping" };
    await updateRecord(dir, record).catch(() => {});
    await service.close();
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
    // A failed boot keeps its log for `shuru start` to show; a clean stop leaves nothing.
    if (failed) await Deno.remove(recordPath(dir, spec.name)).catch(() => {});
    else await removeRecord(dir, spec.name);
    for (const [sig, fn] of handlers) Deno.removeSignalListener(sig, fn);
  }
}
