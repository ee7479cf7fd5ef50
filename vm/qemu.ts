/**
 * The QEMU backend: runs the guest architecture's QEMU (`qemu-system-x86_64 -M microvm`,
 * `qemu-system-aarch64 -M virt`; see `machine.ts`) as a child process.
 *
 * No orphan QEMU: the child is started through `setpriv --pdeathsig SIGKILL`, so the kernel
 * kills it when our process dies for any reason (even SIGKILL); a normal exit kills it too.
 * The serial console always goes to the instance's log file; its tail is attached to errors.
 *
 * @module
 */

import { VmError } from "./errors.ts";
import { qemuArgs } from "./qemu_args.ts";
import { machineFor } from "./machine.ts";
import type { BootPhase, Vm, VmBackend, VmConfig, VmExit } from "./types.ts";
import { AGENT_START_MARKER, INITRAMFS_MARKER } from "../assets/mod.ts";
import { findCommand } from "../assets/host_tools.ts";

/** Options of {@linkcode QemuBackend}. */
export interface QemuBackendOptions {
  /** The QEMU program (default: the guest architecture's, from PATH and the standard folders). */
  qemu?: string;
  /** PATH to search for programs (default: standard folders only). */
  path?: string;
  /** Called with each serial console line (without the newline). */
  onConsoleLine?: (line: string) => void;
}

const CONSOLE_TAIL_LINES = 200;
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
      vm = new QemuVm(child, log, listener, started, config, this.#options.onConsoleLine);
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
  readonly agent: Promise<Deno.Conn>;
  readonly exited: Promise<VmExit>;
  readonly phases: Partial<Record<BootPhase, number>> = {};
  readonly #child: Deno.ChildProcess;
  readonly #started: number;
  readonly #tail: string[] = [];
  readonly #waiters = new Map<BootPhase, Array<(ms: number) => void>>();
  #stopRequested = false;
  #ended = false;
  #sawPowerDown = false;
  #panic = "";

  constructor(
    child: Deno.ChildProcess,
    log: Deno.FsFile,
    listener: Deno.Listener,
    started: number,
    config: VmConfig,
    onConsoleLine?: (line: string) => void,
  ) {
    this.#child = child;
    this.pid = child.pid;
    this.#started = started;
    this.#mark("spawned");

    this.agent = (async () => {
      try {
        const conn = await listener.accept();
        // QEMU connects while creating its devices, before it loads the kernel.
        this.#mark("qemuReady");
        return conn;
      } finally {
        listener.close();
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
      try {
        listener.close();
      } catch { /* closed after accept */ }
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

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(2000);
    try {
      (await this.agent.catch(() => undefined))?.close();
    } catch { /* the caller closed it */ }
  }
}
