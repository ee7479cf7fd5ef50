/**
 * The Virtualization.framework backend (`--backend vz`, the default on macOS): the same
 * {@linkcode Vm} as QEMU's, with the VM inside our own process.
 *
 * Every host end of a device is a socket Deno owns: we listen on the console and agent sockets
 * (`Deno.listen`), `connect()` the other ends with libc and give those fds to the framework
 * (`NSFileHandle`), so the console and agent arrive as ordinary `Deno.Conn`s. The root disk is
 * our NBD server's Unix socket, reached by the framework's own NBD client (`nbd+unix://`). The
 * network device is the VM's end of a datagram socket pair whose other end our stack reads (one
 * Ethernet frame per datagram; `runner/network.ts`, transport `pair`).
 *
 * @module
 */

import { dirname, join } from "node:path";
import { closeFd, connectUnixSocket, libc } from "../ffi/mod.ts";
import { writeAll } from "../io/mod.ts";
import { BootConsole } from "./console.ts";
import { VmError } from "./errors.ts";
import type { GuestRam } from "./guest_ram.ts";
import type { MachineDescription } from "./machine_description.ts";
import type {
  BootPhase,
  SaveStateResult,
  Vm,
  VmBackend,
  VmConfig,
  VmExit,
  VmSnapshotFiles,
} from "./types.ts";
import { checkKernelImage, checkVzConfig, type VzConfig, vzConfig } from "./vz_config.ts";
import { type VzFds, VzFramework, VzMachine, type VzStop } from "./vz_driver.ts";

/**
 * Socket buffer sizes of the VM's end of the network's datagram socket pair (Apple's advice,
 * as Code-Hex/vz passes it on: SO_RCVBUF at least twice SO_SNDBUF, four times recommended). On
 * macOS a Unix datagram larger than the sender's SO_SNDBUF is refused, so these also let frames
 * of a large MTU through.
 */
const NET_BUFFERS = { send: 1 << 20, receive: 4 << 20 } as const;

/** Options of {@linkcode VzBackend}. */
export interface VzBackendOptions {
  /** Called with each serial console line (without the newline). */
  onConsoleLine?: (line: string) => void;
  /** Called with one-line notices (CPU or memory adjusted to the framework's limits). */
  onNotice?: (line: string) => void;
  /**
   * File holding the machine identifier (created when missing). A restore needs the identifier
   * of the saved machine. @default `vz-machine-id` in the instance folder
   */
  machineIdentifierFile?: string;
}

/** Starts VMs with Apple's Virtualization.framework. */
export class VzBackend implements VmBackend {
  /** Backend name. */
  readonly name = "vz";
  /** The virtio console is `hvc0`; VZ's devices are on PCI. */
  readonly cmdline = { console: "hvc0", pci: true } as const;
  /** shuru's memory snapshots (RAM file + devices state) are QEMU's; VZ saves whole machines. */
  readonly memorySnapshots = false;
  /** Mounts are virtio-fs shares. */
  readonly mountTransport = "virtiofs" as const;
  /** The NIC's host end is one end of a datagram socket pair. */
  readonly netTransport = "pair" as const;
  readonly #options: VzBackendOptions;

  constructor(options: VzBackendOptions = {}) {
    this.#options = options;
  }

  /** Starts the VM; resolves once the framework reports it running. */
  start(config: VmConfig): Promise<VzVm> {
    return this.#launch(config, {});
  }

  /** Refuses: shuru's memory snapshots need the QEMU backend (see `restoreMachineState`). */
  restore(_config: VmConfig, _snapshot: VmSnapshotFiles): Promise<Vm> {
    return Promise.reject(unsupportedSnapshots("restore a memory snapshot"));
  }

  /**
   * Starts a VM from a state saved by {@linkcode VzVm.saveMachineState} (`path`, plus its
   * identifier in `path.machine-id`). `config` must match the saved machine's.
   */
  restoreMachineState(config: VmConfig, path: string): Promise<VzVm> {
    return this.#launch(config, { restoreFrom: path });
  }

  async #launch(config: VmConfig, how: { restoreFrom?: string }): Promise<VzVm> {
    const fw = VzFramework.open();
    const dir = dirname(config.agentSocket);
    const idFile = how.restoreFrom !== undefined
      ? `${how.restoreFrom}.machine-id`
      : this.#options.machineIdentifierFile ?? join(dir, "vz-machine-id");
    const machineIdentifier = await Deno.readFile(idFile).catch((err) => {
      if (err instanceof Deno.errors.NotFound && how.restoreFrom === undefined) return null;
      throw new VmError("invalid_config", `Cannot read the machine identifier ${idFile}: ${err}`);
    });
    const { vz, adjusted } = vzConfig(config, {
      limits: fw.limits(),
      consoleSocket: join(dir, "console.sock"),
      machineIdentifier,
    });
    if (adjusted.cpus) {
      this.#options.onNotice?.(
        `shuru: ${adjusted.cpus[0]} CPUs asked, the framework allows ${adjusted.cpus[1]}`,
      );
    }
    if (adjusted.memoryMiB) {
      this.#options.onNotice?.(
        `shuru: ${adjusted.memoryMiB[0]} MiB asked, the framework allows ${adjusted.memoryMiB[1]}`,
      );
    }
    checkVzConfig(vz, fw.limits());
    await checkKernelFile(vz.bootLoader.kernel);

    const devices = await connectDevices(vz);
    try {
      const started = performance.now();
      // The machine reports its stop to the VzVm made right after it.
      const owner: { vm?: VzVm } = {};
      const machine = VzMachine.create(fw, vz, devices.fds, {
        onStop: (stop) => owner.vm?.stopped(stop),
        onDisk: (event) => {
          if (!event.connected) this.#options.onNotice?.(`shuru: ${event.error}`);
        },
        onNetworkDisconnected: (error) => this.#options.onNotice?.(`shuru: ${error}`),
      });
      if (how.restoreFrom === undefined) {
        await Deno.writeFile(idFile, machine.machineIdentifier, { mode: 0o600 });
      }
      const vm = new VzVm(machine, {
        config,
        vz,
        devices,
        started,
        ...(this.#options.onConsoleLine ? { onConsoleLine: this.#options.onConsoleLine } : {}),
      });
      owner.vm = vm;
      try {
        if (how.restoreFrom !== undefined) {
          await machine.restore(how.restoreFrom);
          await machine.resume();
        } else {
          await machine.start();
        }
      } catch (err) {
        vm.kill();
        await vm.exited;
        throw err;
      }
      return vm;
    } catch (err) {
      devices.close();
      throw err;
    }
  }
}

/** The host ends of a VZ machine's devices: fds for the framework, connections for us. */
export interface DeviceSockets {
  /** The fds to give the framework. */
  fds: VzFds;
  /** Our end of the serial console. */
  consoleConn: Deno.Conn;
  /** Our end of the agent's console port. */
  agentConn: Deno.Conn;
  /**
   * Closes the console and agent fds given to the framework (once). Its file handles do not own
   * them (`closeOnDealloc:NO`), so this runs once the machine is released. The network's fds are
   * borrowed: their network stack closes them.
   */
  closeFds(): void;
  /** Closes the fds, the listeners and our connections. */
  close(): void;
}

/**
 * Listens on the console and agent sockets of `vz`, connects their other ends with libc, sizes
 * the buffers of each network device's socket (the VM's end of the stack's pair), and returns
 * both sides.
 */
export async function connectDevices(vz: VzConfig): Promise<DeviceSockets> {
  const listeners: Deno.Listener[] = [];
  const conns: Deno.Conn[] = [];
  const fds: VzFds = { serialPorts: [], consolePorts: [], network: [] };
  let fdsClosed = false;
  const closeFds = () => {
    if (fdsClosed) return;
    fdsClosed = true;
    for (const fd of [...fds.serialPorts, ...fds.consolePorts]) {
      try {
        closeFd(fd);
      } catch { /* already closed */ }
    }
  };
  const close = () => {
    closeFds();
    for (const l of listeners) {
      try {
        l.close();
      } catch { /* closed */ }
    }
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  };
  try {
    const listen = async (path: string) => {
      await Deno.remove(path).catch(() => {});
      const l = Deno.listen({ transport: "unix", path });
      listeners.push(l);
      return l;
    };
    const consoleListener = await listen(vz.serialPorts[0]!.socket);
    const agentListener = await listen(vz.consolePorts[0]!.socket);
    fds.serialPorts.push(connectUnixSocket(vz.serialPorts[0]!.socket, { type: "stream" }));
    fds.consolePorts.push(connectUnixSocket(vz.consolePorts[0]!.socket, { type: "stream" }));
    for (const net of vz.network) {
      if (net.fd === null) {
        throw new VmError(
          "invalid_config",
          "Cannot give the VM a network: the vz backend takes one end of a datagram socket pair",
        );
      }
      try {
        libc.setSocketBuffer(net.fd, "send", NET_BUFFERS.send);
        libc.setSocketBuffer(net.fd, "receive", NET_BUFFERS.receive);
      } catch (err) {
        throw new VmError(
          "invalid_config",
          `Cannot give the VM a network: fd ${net.fd} is not a socket (${(err as Error).message})`,
          { cause: err },
        );
      }
      fds.network.push(net.fd);
    }
    // The connections are complete (Unix sockets connect synchronously), so accept returns.
    const consoleConn = await consoleListener.accept();
    conns.push(consoleConn);
    const agentConn = await agentListener.accept();
    conns.push(agentConn);
    for (const l of listeners.splice(0)) l.close();
    await Deno.remove(vz.serialPorts[0]!.socket).catch(() => {});
    await Deno.remove(vz.consolePorts[0]!.socket).catch(() => {});
    return { fds, consoleConn, agentConn, closeFds, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** Reads the kernel's header and refuses anything but an uncompressed arm64 Image. */
async function checkKernelFile(path: string): Promise<void> {
  let header: Uint8Array;
  try {
    using file = await Deno.open(path);
    header = new Uint8Array(64);
    let got = 0;
    while (got < 64) {
      const n = await file.read(header.subarray(got));
      if (n === null) break;
      got += n;
    }
    header = header.subarray(0, got);
  } catch (err) {
    throw new VmError(
      "invalid_config",
      `Cannot read the kernel ${path}: ${(err as Error).message}`,
    );
  }
  const problem = checkKernelImage(header);
  if (problem) throw new VmError("invalid_config", `Cannot boot ${path}: ${problem}`);
}

/** A VM run by Virtualization.framework inside this process. */
export class VzVm implements Vm {
  /** This process: the VM runs inside it. */
  readonly pid = Deno.pid;
  readonly agent: Promise<Deno.Conn>;
  readonly exited: Promise<VmExit>;
  readonly #machine: VzMachine;
  readonly #console: BootConsole;
  readonly #consoleDone: Promise<void>;
  readonly #devices: DeviceSockets;
  #resolveExit!: (stop: VzStop) => void;
  #stopRequested = false;
  #ended = false;

  /** @internal Use {@linkcode VzBackend}. */
  constructor(
    machine: VzMachine,
    parts: {
      config: VmConfig;
      vz: VzConfig;
      devices: DeviceSockets;
      started: number;
      onConsoleLine?: (line: string) => void;
    },
  ) {
    this.#machine = machine;
    this.#devices = parts.devices;
    this.#console = new BootConsole({
      started: parts.started,
      ...(parts.onConsoleLine ? { onLine: parts.onConsoleLine } : {}),
    });
    this.#console.mark("spawned");
    // The framework connects the agent's port when the device is created, before boot.
    this.#console.mark("qemuReady");
    this.agent = Promise.resolve(parts.devices.agentConn);
    this.#consoleDone = this.#pumpConsole(parts.devices.consoleConn, parts.config);
    const stop = new Promise<VzStop>((resolve) => this.#resolveExit = resolve);
    this.exited = stop.then((how) => this.#finish(how));
  }

  /** After the stop: releases the machine, drains the console, describes the end. */
  async #finish(how: VzStop): Promise<VmExit> {
    this.#ended = true;
    this.#console.mark("exited");
    this.#machine.close();
    // The other ends of our sockets: the console stream then ends after the guest's last bytes.
    this.#devices.closeFds();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#consoleDone.catch(() => {}),
      new Promise((resolve) => timer = setTimeout(resolve, 2000)),
    ]);
    clearTimeout(timer);
    try {
      this.#devices.consoleConn.close();
    } catch { /* closed */ }
    this.#console.dropWaiters();
    const panic = this.#console.panic;
    return {
      code: how.error ? 1 : 0,
      signal: null,
      poweredOff: how.guest && !this.#stopRequested && this.#console.sawPowerDown && !panic,
      panic,
      consoleTail: this.consoleTail(),
      stderr: how.error ?? "",
    };
  }

  /** Boot phases seen on the console (ms since start). */
  get phases(): Partial<Record<BootPhase, number>> {
    return this.#console.phases;
  }

  /** The framework's state of the machine. */
  get state(): string {
    return this.#machine.state;
  }

  /** @internal The machine stopped (delegate or state poll). */
  stopped(stop: VzStop): void {
    this.#resolveExit(stop);
  }

  async #pumpConsole(conn: Deno.Conn, config: VmConfig): Promise<void> {
    using log = await Deno.open(config.consoleLog, { write: true, create: true, truncate: true });
    const stdin = config.interactiveConsole ? this.#forwardStdin(conn) : undefined;
    try {
      for await (const chunk of conn.readable) {
        await writeAll(log, chunk);
        if (config.interactiveConsole) await writeAll(Deno.stdout, chunk);
        this.#console.push(chunk);
      }
    } finally {
      this.#console.end();
      await stdin?.catch(() => {});
    }
  }

  async #forwardStdin(conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null || this.#ended) return;
      await writeAll(conn, buf.subarray(0, n));
    }
  }

  waitFor(phase: BootPhase): Promise<number> {
    return this.#console.waitFor(phase, this.exited, "VZ");
  }

  /**
   * Asks the guest to power off (`requestStopWithError:`), then stops the machine after
   * `graceMs`.
   */
  async stop(graceMs = 5000): Promise<VmExit> {
    if (!this.#ended) {
      this.#stopRequested = true;
      try {
        this.#machine.requestStop();
      } catch {
        this.kill();
      }
      const timer = setTimeout(() => this.kill(), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return await this.exited;
  }

  /** Stops the machine at once (`stopWithCompletionHandler:`). */
  kill(): void {
    this.#stopRequested = true;
    if (this.#ended) return;
    this.#machine.stop().catch((err) => {
      // A machine that cannot be stopped (already stopping) ends through the delegate; one
      // that never started has nothing to stop.
      if (this.#machine.readState() === "stopped") {
        this.stopped({ guest: false, error: (err as Error).message });
      }
    });
  }

  /**
   * Saves the running machine's state to `path` (pause, save) and its identifier to
   * `path.machine-id`; the machine stays paused unless `resume` is set.
   *
   * @throws {VmError} `vz_failed` when this configuration cannot be saved (the reason is the
   *   framework's) or the save fails.
   */
  async saveMachineState(path: string, options: { resume?: boolean } = {}): Promise<void> {
    if (this.#machine.saveRestore !== true) {
      throw new VmError("vz_failed", this.#machine.saveRestore);
    }
    await this.#machine.pause();
    await this.#machine.save(path);
    await Deno.writeFile(`${path}.machine-id`, this.#machine.machineIdentifier, { mode: 0o600 });
    if (options.resume) await this.#machine.resume();
  }

  consoleTail(lines = 30): string {
    return this.#console.tail(lines);
  }

  /** Refuses: the framework connects the agent's port once. */
  connectAgent(): Promise<Deno.Conn> {
    return Promise.reject(unsupportedSnapshots("reconnect the agent channel"));
  }

  /** Pauses the machine (`pauseWithCompletionHandler:`). */
  async pause(): Promise<void> {
    await this.#machine.pause();
  }

  /** Resumes the machine (`resumeWithCompletionHandler:`). */
  async resume(): Promise<void> {
    await this.#machine.resume();
  }

  /** Refuses (see {@linkcode VzVm.saveMachineState} for the framework's own). */
  saveState(): Promise<SaveStateResult> {
    return Promise.reject(unsupportedSnapshots("save the machine state"));
  }

  /** Refuses. */
  describe(): MachineDescription {
    throw unsupportedSnapshots("describe the machine");
  }

  /** Refuses. */
  openRam(): Promise<GuestRam> {
    return Promise.reject(unsupportedSnapshots("read the guest's RAM"));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(2000);
    try {
      (await this.agent).close();
    } catch { /* the caller closed it */ }
  }
}

function unsupportedSnapshots(action: string): VmError {
  return new VmError(
    "unsupported_host",
    `Cannot ${action}: memory snapshots need the QEMU backend (--backend qemu)`,
  );
}
