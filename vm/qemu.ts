/**
 * The QEMU backend: runs the guest architecture's QEMU (`qemu-system-x86_64 -M microvm`,
 * `qemu-system-aarch64 -M virt`; see `machine.ts`) as a child process.
 *
 * QEMU runs confined (`confine.ts`): its seccomp sandbox, an empty environment, its own network
 * namespace where the host allows one, and `setpriv --pdeathsig SIGKILL`, so the kernel kills it
 * when our process dies for any reason (even SIGKILL); a normal exit kills it too.
 * The serial console always goes to the instance's log file; its tail is attached to errors.
 *
 * @module
 */

import { confineQemu } from "./confine.ts";
import { BootConsole } from "./console.ts";
import { VmError } from "./errors.ts";
import { qemuArgs } from "./qemu_args.ts";
import { machineFor } from "./machine.ts";
import type { BootPhase, Vm, VmBackend, VmConfig, VmExit } from "./types.ts";
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
  readonly #options: QemuBackendOptions;

  constructor(options: QemuBackendOptions = {}) {
    this.#options = options;
  }

  /** Starts QEMU; resolves once it has connected the agent channel (within milliseconds). */
  async start(config: VmConfig): Promise<Vm> {
    const machine = machineFor(config.arch);
    const qemu = this.#options.qemu ?? findCommand(machine.qemu, this.#options.path);
    if (!qemu) {
      throw new VmError(
        "spawn_failed",
        `Cannot start the ${machine.arch} VM: ${machine.qemu} not found; install it with: ` +
          `apt-get install ${machine.qemuPackage}`,
      );
    }
    const args = qemuArgs(config);
    await Deno.remove(config.agentSocket).catch(() => {});
    const listener = Deno.listen({ transport: "unix", path: config.agentSocket });
    let vm: QemuVm;
    try {
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
      vm = new QemuVm(child, log, listener, started, config, {
        confinement: command.summary,
        ...(this.#options.onConsoleLine ? { onConsoleLine: this.#options.onConsoleLine } : {}),
      });
    } catch (err) {
      listener.close();
      await Deno.remove(config.agentSocket).catch(() => {});
      throw err;
    }
    const first = await Promise.race([vm.agent.then(() => "agent"), vm.exited.then(() => "exit")]);
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

class QemuVm implements Vm {
  readonly pid: number;
  readonly confinement: string;
  readonly agent: Promise<Deno.Conn>;
  readonly exited: Promise<VmExit>;
  readonly #child: Deno.ChildProcess;
  readonly #console: BootConsole;
  #stopRequested = false;
  #ended = false;

  constructor(
    child: Deno.ChildProcess,
    log: Deno.FsFile,
    listener: Deno.Listener,
    started: number,
    config: VmConfig,
    options: { confinement: string; onConsoleLine?: (line: string) => void },
  ) {
    this.#child = child;
    this.pid = child.pid;
    this.confinement = options.confinement;
    const onConsoleLine = options.onConsoleLine;
    const bootConsole = new BootConsole({
      started,
      ...(onConsoleLine ? { onLine: onConsoleLine } : {}),
    });
    this.#console = bootConsole;
    bootConsole.mark("spawned");

    this.agent = (async () => {
      try {
        const conn = await listener.accept();
        // QEMU connects while creating its devices, before it loads the kernel.
        bootConsole.mark("qemuReady");
        return conn;
      } finally {
        listener.close();
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
      try {
        listener.close();
      } catch { /* closed after accept */ }
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

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(2000);
    try {
      (await this.agent.catch(() => undefined))?.close();
    } catch { /* the caller closed it */ }
  }
}
