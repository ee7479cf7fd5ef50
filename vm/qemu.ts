/**
 * The QEMU backend: runs `qemu-system-x86_64 -M microvm` as a child process.
 *
 * No orphan QEMU: the child is started through `setpriv --pdeathsig SIGKILL`, so the kernel
 * kills it when our process dies for any reason (even SIGKILL); a normal exit kills it too.
 * The serial console always goes to the instance's log file; its tail is attached to errors.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { VmError } from "./errors.ts";
import { type GuestRam, openGuestRam } from "./guest_ram.ts";
import { describeMachine, type MachineDescription, machineMismatch } from "./machine.ts";
import { loadMachineState, saveDeviceState } from "./migration.ts";
import { QmpClient } from "./qmp.ts";
import { qemuArgs } from "./qemu_args.ts";
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
import { AGENT_START_MARKER, INITRAMFS_MARKER } from "../assets/mod.ts";
import { findCommand } from "../assets/host_tools.ts";

/** Options of {@linkcode QemuBackend}. */
export interface QemuBackendOptions {
  /** The QEMU program (default: `qemu-system-x86_64` from the standard folders). */
  qemu?: string;
  /** PATH to search for programs (default: standard folders only). */
  path?: string;
  /** Called with each serial console line (without the newline). */
  onConsoleLine?: (line: string) => void;
}

const CONSOLE_TAIL_LINES = 200;
/** Deadline of monitor commands and state saves/loads unless the caller gives a signal. */
const MONITOR_TIMEOUT_MS = 120_000;
const STDERR_CAP = 64 * 1024;
const LINE_CAP = 4096;

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

/** Writes all of `data` (a single write may be partial). */
async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let done = 0;
  while (done < data.length) done += await w.write(data.subarray(done));
}

/** Starts VMs with QEMU's `microvm` machine. */
export class QemuBackend implements VmBackend {
  /** Backend name. */
  readonly name = "qemu";
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
    const qemu = this.#options.qemu ?? findCommand("qemu-system-x86_64", this.#options.path);
    if (!qemu) {
      throw new VmError(
        "spawn_failed",
        "Cannot start the VM: qemu-system-x86_64 not found; install it with: apt-get install qemu-system-x86",
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
      const setpriv = findCommand("setpriv", this.#options.path);
      const argv = setpriv
        ? [setpriv, "--pdeathsig", "SIGKILL", "--", qemu, ...args]
        : [qemu, ...args];
      const log = await Deno.open(config.consoleLog, { write: true, create: true, truncate: true });
      const started = performance.now();
      let child: Deno.ChildProcess;
      try {
        child = new Deno.Command(argv[0]!, {
          args: argv.slice(1),
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
      vm = new QemuVm(child, log, listeners, started, config, this.#options.onConsoleLine);
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
  readonly agent: Promise<Deno.Conn>;
  readonly exited: Promise<VmExit>;
  readonly phases: Partial<Record<BootPhase, number>> = {};
  /** Resolves once the monitor (if any) has greeted and negotiated. */
  readonly monitorReady: Promise<QmpClient | undefined>;
  readonly #config: VmConfig;
  readonly #child: Deno.ChildProcess;
  readonly #started: number;
  readonly #tail: string[] = [];
  readonly #waiters = new Map<BootPhase, Array<(ms: number) => void>>();
  #qmp: QmpClient | undefined;
  #stopRequested = false;
  #ended = false;
  #sawPowerDown = false;
  #panic = "";

  /** @internal Created by {@linkcode QemuBackend}. */
  constructor(
    child: Deno.ChildProcess,
    log: Deno.FsFile,
    listeners: Deno.Listener[],
    started: number,
    config: VmConfig,
    onConsoleLine?: (line: string) => void,
  ) {
    this.#child = child;
    this.#config = config;
    this.pid = child.pid;
    this.#started = started;
    this.#mark("spawned");
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
      this.#mark("qemuReady");
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
        this.#mark("qemuReady");
        return conn;
      } finally {
        agentListener.close();
        await Deno.remove(config.agentSocket).catch(() => {});
      }
    })();
    // The agent promise may lose the race with exit; keep it from being unhandled.
    this.agent.catch(() => {});

    const consoleDone = this.#pumpConsole(
      child.stdout,
      log,
      config.interactiveConsole,
      onConsoleLine,
    );
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
      this.#mark("exited");
      // QEMU never connected: unblock accept().
      for (const l of listeners) {
        try {
          l.close();
        } catch { /* closed after accept */ }
      }
      await this.#qmp?.close();
      const [stderr] = await Promise.all([stderrDone.catch(() => ""), consoleDone.catch(() => {})]);
      log.close();
      for (const [, waiters] of this.#waiters) waiters.length = 0;
      return {
        code: status.code,
        signal: status.signal,
        // With -no-reboot QEMU exits 0 on a reset too (a panic reboots): only the kernel's
        // power-down message means the guest powered itself off.
        poweredOff: status.success && !this.#stopRequested && this.#sawPowerDown && !this.#panic,
        panic: this.#panic,
        consoleTail: this.consoleTail(),
        stderr,
      };
    })();
  }

  async #pumpConsole(
    stdout: ReadableStream<Uint8Array>,
    log: Deno.FsFile,
    echo: boolean | undefined,
    onLine?: (line: string) => void,
  ): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stdout) {
      await writeAll(log, chunk);
      if (echo) await writeAll(Deno.stdout, chunk);
      const lines = (partial + decoder.decode(chunk, { stream: true })).split("\n");
      partial = (lines.pop() ?? "").slice(-LINE_CAP);
      for (const raw of lines) {
        const line = raw.replace(/\r$/, "").slice(0, LINE_CAP);
        this.#tail.push(line);
        if (this.#tail.length > CONSOLE_TAIL_LINES) this.#tail.shift();
        this.#scan(line);
        onLine?.(line);
      }
    }
    if (partial) this.#tail.push(partial);
  }

  /** Recognises the boot markers printed by the initramfs and the rootfs init. */
  #scan(line: string): void {
    if (line.includes("reboot: Power down")) {
      this.#sawPowerDown = true;
    } else if (!this.#panic && line.includes("Kernel panic")) {
      this.#panic = line.replace(/^\[[ \d.]+\]\s*/, "");
    } else if (line.startsWith(`${INITRAMFS_MARKER} start `)) {
      const uptime = Number(line.split(" ").at(-1));
      this.#mark("initramfs");
      if (Number.isFinite(uptime)) {
        this.#mark("kernel", Math.max(0, (this.phases.initramfs ?? 0) - uptime * 1000));
      }
    } else if (line.startsWith(`${INITRAMFS_MARKER} root mounted`)) {
      this.#mark("rootMounted");
    } else if (line.startsWith(AGENT_START_MARKER)) {
      this.#mark("agentStart");
    }
  }

  #mark(phase: BootPhase, at = performance.now() - this.#started): void {
    if (this.phases[phase] !== undefined) return;
    this.phases[phase] = Math.round(at);
    for (const resolve of this.#waiters.get(phase) ?? []) resolve(this.phases[phase]!);
    this.#waiters.delete(phase);
  }

  waitFor(phase: BootPhase): Promise<number> {
    const seen = this.phases[phase];
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<number>((resolve, reject) => {
      const list = this.#waiters.get(phase) ?? [];
      list.push(resolve);
      this.#waiters.set(phase, list);
      this.exited.then((exit) => {
        if (this.phases[phase] !== undefined) return resolve(this.phases[phase]!);
        reject(
          new VmError(
            "boot_failed",
            `The VM ended (QEMU status ${exit.code}${exit.signal ? `, ${exit.signal}` : ""}) ` +
              `before ${phase}. Console tail:\n${exit.consoleTail}` +
              (exit.stderr ? `\nQEMU: ${exit.stderr}` : ""),
          ),
        );
      });
    });
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
    return this.#tail.slice(-lines).join("\n");
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
    const chardevs = await qmp.execute<{ label: string; filename: string }[]>(
      "query-chardev",
      undefined,
      { signal },
    );
    const agent = chardevs.find((c) => c.label === "agent");
    if (agent && !agent.filename.startsWith("disconnected:")) {
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
