/**
 * The QEMU backend: runs the guest architecture's QEMU (`qemu-system-x86_64 -M microvm`,
 * `qemu-system-aarch64 -M virt`; see `machine.ts`) as a child process.
 *
 * QEMU runs confined (`confine.ts`): its seccomp sandbox, an empty environment, its own network
 * namespace where the host allows one, and `setpriv --pdeathsig SIGKILL`, so the kernel kills it
 * when our process dies for any reason (even SIGKILL); a normal exit kills it too. (The seccomp
 * filter denies spawning, so migration streams never use `exec:`: a Unix socket in the instance
 * folder instead, `migration.ts`.)
 * The serial console always goes to the instance's log file; its tail is attached to errors.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { confineQemu } from "./confine.ts";
import { BootConsole } from "./console.ts";
import { VmError } from "./errors.ts";
import { type GuestRam, openGuestRam } from "./guest_ram.ts";
import {
  describeMachine,
  type MachineDescription,
  machineMismatch,
} from "./machine_description.ts";
import { loadMachineState, saveDeviceState } from "./migration.ts";
import { QmpClient } from "./qmp.ts";
import { qemuArgs } from "./qemu_args.ts";
import { machineFor } from "./machine.ts";
import type {
  BootPhase,
  SaveStateOptions,
  SaveStateResult,
  Vm,
  VmBackend,
  VmConfig,
  VmExit,
  VmSnapshotFiles,
} from "./types.ts";
import { findCommand } from "../host/mod.ts";
import { writeAll } from "../io/mod.ts";

/** Options of {@linkcode QemuBackend}. */
export interface QemuBackendOptions {
  /** The QEMU program (default: the guest architecture's, from PATH and the standard folders). */
  qemu?: string;
  /** PATH to search for programs (default: standard folders only). */
  path?: string;
  /** Called with each serial console line (without the newline). */
  onConsoleLine?: (line: string) => void;
}

/** Deadline of monitor commands and state saves/loads unless the caller gives a signal. */
const MONITOR_TIMEOUT_MS = 120_000;
const STDERR_CAP = 64 * 1024;

/** QEMU processes still running, killed if our process exits normally. */
const live = new Set<Deno.ChildProcess>();
let unloadHooked = false;
function track(child: Deno.ChildProcess): void {
  if (!unloadHooked) {
    unloadHooked = true;
    globalThis.addEventListener("unload", () => {
      for (const c of live) {
        try {
          c.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    });
  }
  live.add(child);
}

/** Starts VMs with QEMU (`microvm` for x86_64 guests, `virt` for arm64). */
export class QemuBackend implements VmBackend {
  /** Backend name. */
  readonly name = "qemu";
  /** Memory snapshots: devices state + RAM file (docs/snapshots.md). */
  readonly memorySnapshots = true;
  readonly #options: QemuBackendOptions;

  constructor(options: QemuBackendOptions = {}) {
    this.#options = options;
  }

  /** Starts QEMU; resolves once it has connected the agent channel (within milliseconds). */
  start(config: VmConfig): Promise<Vm> {
    return this.#launch(config, false);
  }

  /**
   * Starts QEMU paused with `-incoming defer`, loads the machine state of `snapshot` over the
   * monitor (RAM stays in the snapshot's file, mapped private), and resolves with the VM still
   * paused. Needs `config.controlSocket`.
   *
   * @throws {VmError} `restore_failed` when QEMU refuses the state (another machine, another
   *   QEMU, a corrupt file), with QEMU's words.
   */
  async restore(config: VmConfig, snapshot: VmSnapshotFiles, signal?: AbortSignal): Promise<Vm> {
    if (config.controlSocket === undefined) {
      throw new VmError("invalid_config", "Cannot restore a VM without a control socket");
    }
    let stateSize: number;
    try {
      const [ram, state] = await Promise.all([
        Deno.stat(snapshot.ramFile),
        Deno.stat(snapshot.stateFile),
      ]);
      stateSize = state.size;
      if (ram.size !== config.memoryMiB * 1024 * 1024) {
        throw new Error(
          `the RAM file is ${ram.size} bytes, the VM has ${config.memoryMiB} MiB`,
        );
      }
    } catch (err) {
      throw new VmError(
        "restore_failed",
        `Cannot restore the VM: ${
          err instanceof Deno.errors.NotFound
            ? "a snapshot file is missing"
            : (err as Error).message
        }`,
        { cause: err },
      );
    }
    const vm = await this.#launch(
      { ...config, memory: { path: snapshot.ramFile, shared: false } },
      true,
    );
    try {
      if (stateSize === 0) {
        throw new VmError("restore_failed", "Cannot restore the VM: the state file is empty");
      }
      // QEMU notices some mismatches (a section it has no device for) but not all: a state of
      // one CPU loads into a two-CPU machine and leaves the second CPU in reset.
      const mismatch = snapshot.machine && machineMismatch(snapshot.machine, vm.describe());
      if (mismatch) {
        throw new VmError(
          "restore_failed",
          `Cannot restore the VM: the snapshot belongs to another machine (${mismatch})`,
        );
      }
      await vm.loadState(snapshot.stateFile, signal);
    } catch (err) {
      vm.kill();
      await vm.exited;
      throw err;
    }
    return vm;
  }

  /**
   * Starts QEMU paused with `-incoming defer` and nothing loaded (QEMU-specific): for loading a
   * migration stream by hand with {@linkcode loadMachineState} (benchmarks of other
   * mechanisms). `restore` is this plus the load.
   */
  startIncoming(config: VmConfig): Promise<QemuVm> {
    return this.#launch(config, true);
  }

  async #launch(config: VmConfig, incoming: boolean): Promise<QemuVm> {
    const machine = machineFor(config.arch);
    const qemu = this.#options.qemu ?? findCommand(machine.qemu, this.#options.path);
    if (!qemu) {
      throw new VmError(
        "spawn_failed",
        `Cannot start the ${machine.arch} VM: ${machine.qemu} not found; install it with: ` +
          `apt-get install ${machine.qemuPackage}`,
      );
    }
    const args = qemuArgs(config, { incoming });
    const listeners: Deno.Listener[] = [];
    // With a monitor, QEMU listens on the agent socket (see qemu_args.ts); else it connects.
    const sockets = config.controlSocket ? [config.controlSocket] : [config.agentSocket];
    if (config.controlSocket) await Deno.remove(config.agentSocket).catch(() => {});
    let vm: QemuVm;
    try {
      for (const path of sockets) {
        await Deno.remove(path).catch(() => {});
        listeners.push(Deno.listen({ transport: "unix", path }));
      }
      const command = await confineQemu(
        qemu,
        args,
        this.#options.path !== undefined ? { path: this.#options.path } : {},
      );
      const log = await Deno.open(config.consoleLog, { write: true, create: true, truncate: true });
      const started = performance.now();
      let child: Deno.ChildProcess;
      try {
        child = new Deno.Command(command.program, {
          args: command.args,
          clearEnv: true,
          stdin: config.interactiveConsole ? "inherit" : "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
      } catch (err) {
        log.close();
        throw new VmError("spawn_failed", `Cannot start ${qemu}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      track(child);
      vm = new QemuVm(child, log, listeners, started, config, {
        confinement: command.summary,
        ...(this.#options.onConsoleLine ? { onConsoleLine: this.#options.onConsoleLine } : {}),
      });
    } catch (err) {
      for (const l of listeners) l.close();
      for (const path of sockets) await Deno.remove(path).catch(() => {});
      throw err;
    }
    let first: string;
    try {
      first = await Promise.race([
        Promise.all([vm.agent, vm.monitorReady]).then(() => "ready"),
        vm.exited.then(() => "exit"),
      ]);
    } catch (err) {
      vm.kill();
      await vm.exited;
      throw new VmError("qemu_failed", `Cannot start the VM: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (first === "exit") {
      const exit = await vm.exited;
      throw new VmError(
        "qemu_failed",
        `Cannot start the VM: QEMU exited with status ${exit.code}` +
          (exit.stderr ? `: ${exit.stderr}` : ""),
      );
    }
    return vm;
  }
}

/** The QEMU VM; `qmp` is its monitor connection when it has a control socket. */
export class QemuVm implements Vm {
  readonly pid: number;
  readonly confinement: string;
  readonly agent: Promise<Deno.Conn>;
  readonly exited: Promise<VmExit>;
  /** Resolves once the monitor (if any) has greeted and negotiated. */
  readonly monitorReady: Promise<QmpClient | undefined>;
  readonly #config: VmConfig;
  readonly #child: Deno.ChildProcess;
  readonly #console: BootConsole;
  #qmp: QmpClient | undefined;
  #stopRequested = false;
  #ended = false;

  /** @internal Created by {@linkcode QemuBackend}. */
  constructor(
    child: Deno.ChildProcess,
    log: Deno.FsFile,
    listeners: Deno.Listener[],
    started: number,
    config: VmConfig,
    options: { confinement: string; onConsoleLine?: (line: string) => void },
  ) {
    this.#child = child;
    this.#config = config;
    this.pid = child.pid;
    this.confinement = options.confinement;
    const onConsoleLine = options.onConsoleLine;
    const bootConsole = new BootConsole({
      started,
      ...(onConsoleLine ? { onLine: onConsoleLine } : {}),
    });
    this.#console = bootConsole;
    bootConsole.mark("spawned");
    const monitorListener = config.controlSocket ? listeners[0] : undefined;
    const agentListener = config.controlSocket ? undefined : listeners[0]!;

    const monitorReady = (async () => {
      if (!monitorListener) return undefined;
      let conn: Deno.Conn;
      try {
        conn = await monitorListener.accept();
      } finally {
        monitorListener.close();
        await Deno.remove(config.controlSocket!).catch(() => {});
      }
      // QEMU connects while creating its devices, before it loads the kernel.
      bootConsole.mark("qemuReady");
      this.#qmp = await QmpClient.connect(conn);
      return this.#qmp;
    })();
    monitorReady.catch(() => {});
    this.monitorReady = monitorReady;

    this.agent = (async () => {
      if (!agentListener) {
        // QEMU listens on the agent socket from before its monitor greets.
        await monitorReady;
        return await this.connectAgent();
      }
      try {
        const conn = await agentListener.accept();
        // QEMU connects while creating its devices, before it loads the kernel.
        bootConsole.mark("qemuReady");
        return conn;
      } finally {
        agentListener.close();
        await Deno.remove(config.agentSocket).catch(() => {});
      }
    })();
    // The agent promise may lose the race with exit; keep it from being unhandled.
    this.agent.catch(() => {});

    const consoleDone = this.#pumpConsole(child.stdout, log, config.interactiveConsole);
    const stderrDone = (async () => {
      let text = "";
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        if (text.length < STDERR_CAP) text += chunk;
      }
      return text.trim();
    })();

    this.exited = (async () => {
      const status = await child.status;
      live.delete(child);
      this.#ended = true;
      bootConsole.mark("exited");
      // QEMU never connected: unblock accept().
      for (const l of listeners) {
        try {
          l.close();
        } catch { /* closed after accept */ }
      }
      await this.#qmp?.close();
      const [stderr] = await Promise.all([stderrDone.catch(() => ""), consoleDone.catch(() => {})]);
      log.close();
      bootConsole.dropWaiters();
      const panic = bootConsole.panic;
      return {
        code: status.code,
        signal: status.signal,
        // With -no-reboot QEMU exits 0 on a reset too (a panic reboots): only the kernel's
        // power-down message means the guest powered itself off.
        poweredOff: status.success && !this.#stopRequested && bootConsole.sawPowerDown &&
          !panic,
        panic,
        consoleTail: this.consoleTail(),
        stderr,
      };
    })();
  }

  /** Boot phases seen on the console (ms since QEMU started). */
  get phases(): Partial<Record<BootPhase, number>> {
    return this.#console.phases;
  }

  async #pumpConsole(
    stdout: ReadableStream<Uint8Array>,
    log: Deno.FsFile,
    echo: boolean | undefined,
  ): Promise<void> {
    try {
      for await (const chunk of stdout) {
        await writeAll(log, chunk);
        if (echo) await writeAll(Deno.stdout, chunk);
        this.#console.push(chunk);
      }
    } finally {
      this.#console.end();
    }
  }

  waitFor(phase: BootPhase): Promise<number> {
    return this.#console.waitFor(phase, this.exited, "QEMU");
  }

  async stop(graceMs = 5000): Promise<VmExit> {
    if (!this.#ended) {
      this.#stopRequested = true;
      this.#signal("SIGTERM");
      const timer = setTimeout(() => this.kill(), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return await this.exited;
  }

  kill(): void {
    this.#stopRequested = true;
    this.#signal("SIGKILL");
  }

  #signal(signal: Deno.Signal): void {
    if (this.#ended) return;
    try {
      this.#child.kill(signal);
    } catch { /* already exited */ }
  }

  consoleTail(lines = 30): string {
    return this.#console.tail(lines);
  }

  async connectAgent(): Promise<Deno.Conn> {
    if (!this.#config.controlSocket) {
      throw new VmError(
        "invalid_config",
        "Cannot reconnect the agent channel: the VM has no control socket (QEMU connects once)",
      );
    }
    if (this.#ended) {
      throw new VmError("qemu_failed", "Cannot connect the agent channel: the VM has exited");
    }
    return await Deno.connect({ transport: "unix", path: this.#config.agentSocket });
  }

  /** The monitor (QEMU-specific), once connected; `undefined` without a control socket. */
  get qmp(): QmpClient | undefined {
    return this.#qmp;
  }

  #monitor(action: string): QmpClient {
    if (this.#ended) throw new VmError("qemu_failed", `Cannot ${action}: the VM has exited`);
    if (!this.#qmp) {
      throw new VmError("invalid_config", `Cannot ${action}: the VM has no control socket`);
    }
    return this.#qmp;
  }

  async pause(signal = AbortSignal.timeout(MONITOR_TIMEOUT_MS)): Promise<void> {
    await this.#monitor("pause the VM").execute("stop", undefined, { signal });
  }

  async resume(signal = AbortSignal.timeout(MONITOR_TIMEOUT_MS)): Promise<void> {
    await this.#monitor("resume the VM").execute("cont", undefined, { signal });
  }

  async saveState(stateFile: string, options: SaveStateOptions = {}): Promise<SaveStateResult> {
    const action = "save the VM state";
    const qmp = this.#monitor(action);
    const signal = options.signal ?? AbortSignal.timeout(MONITOR_TIMEOUT_MS);
    const status = await qmp.execute<{ running: boolean; status: string }>(
      "query-status",
      undefined,
      { signal },
    );
    if (status.running) {
      throw new VmError("save_failed", `Cannot ${action}: the VM is running (pause it first)`);
    }
    // A guest restored while its agent thinks a host is attached would wait on a dead session.
    // The host hung up just before (a detach): give QEMU a moment to notice.
    let connected = true;
    for (let i = 0; i < 200 && connected; i++) {
      const chardevs = await qmp.execute<{ label: string; filename: string }[]>(
        "query-chardev",
        undefined,
        { signal },
      );
      const agent = chardevs.find((c) => c.label === "agent");
      connected = agent !== undefined && !agent.filename.startsWith("disconnected:");
      if (connected) await new Promise((r) => setTimeout(r, 10));
    }
    if (connected) {
      throw new VmError(
        "save_failed",
        `Cannot ${action}: the agent channel is connected (end the agent session and close ` +
          "the connection first, so a restored guest waits for a new host)",
      );
    }
    const t0 = performance.now();
    const stateBytes = await saveDeviceState(qmp, stateFile, { signal, exited: this.exited });
    return { stateBytes, elapsedMs: performance.now() - t0 };
  }

  describe(): MachineDescription {
    return describeMachine(this.#config, this.#monitor("describe the VM").version);
  }

  async openRam(): Promise<GuestRam> {
    const action = "read the guest's RAM";
    const qmp = this.#monitor(action);
    if (!this.#config.memory) {
      throw new VmError("invalid_config", `Cannot ${action}: it is not in a file (memory)`);
    }
    const status = await qmp.execute<{ running: boolean }>("query-status", undefined, {
      signal: AbortSignal.timeout(MONITOR_TIMEOUT_MS),
    });
    if (status.running) {
      throw new VmError("save_failed", `Cannot ${action}: the VM is running (pause it first)`);
    }
    return await openGuestRam(this.pid, {
      file: this.#config.memory,
      size: this.#config.memoryMiB * 1024 * 1024,
    });
  }

  /** @internal Loads a state into a VM started with `-incoming defer` (used by restore). */
  async loadState(stateFile: string, signal: AbortSignal | undefined): Promise<void> {
    const qmp = this.#monitor("restore the VM state");
    await loadMachineState(qmp, stateFile, {
      socketPath: this.#migrationSocket(),
      signal: signal ?? AbortSignal.timeout(MONITOR_TIMEOUT_MS),
      exited: this.exited,
    });
  }

  /** The migration stream's socket, next to the control socket (the instance folder). */
  #migrationSocket(): string {
    return join(dirname(this.#config.controlSocket!), "mig.sock");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(2000);
    try {
      (await this.agent.catch(() => undefined))?.close();
    } catch { /* the caller closed it */ }
  }
}
