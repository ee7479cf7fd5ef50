/**
 * Test and bench fixture: the real guest booted the way `runner/mod.ts` boots it (root disk
 * from our NBD server over a copy-on-write device of the store, agent on virtio-serial), with
 * its RAM in a file and a monitor, so a test can pause it, save it and restore new VMs from
 * the files. Each lab has its own temporary data home; the guest assets are the shared ones.
 *
 * @module
 */

import { join } from "node:path";
import { ensureAssets, type GuestAssets } from "../assets/mod.ts";
import { homeLayout } from "../host/mod.ts";
import { NbdServer } from "../nbd/mod.ts";
import { AgentConnection } from "../agent/mod.ts";
import { type CowDevice, type DeviceSource, Store } from "../store/mod.ts";
import {
  createInstance,
  guestConfig,
  hostTscRate,
  type Instance,
  launchGuest,
  type LaunchOptions,
  QemuBackend,
  type QemuVm,
  recordVmProcess,
  removeInstance,
  restoreGuest,
  type Vm,
  type VmSnapshotFiles,
} from "../vm/mod.ts";

const EXPORT_NAME = "root";

/** Options of {@linkcode SnapshotLab.boot} and {@linkcode SnapshotLab.restore}. */
export interface GuestOptions {
  /** Guest RAM in this file, mapped shared (so it can be saved); anonymous when absent. */
  ramFile?: string;
  /** Disk source (default: the base image). */
  disk?: DeviceSource;
  /** VM generation ID. */
  vmGenerationId?: string;
}

/** One running guest with its disk server. */
export class Guest implements AsyncDisposable {
  readonly vm: Vm;
  readonly instance: Instance;
  readonly device: CowDevice;
  readonly #server: NbdServer;
  #sandbox: AgentConnection | undefined;
  #connections = 0;

  constructor(vm: Vm, instance: Instance, device: CowDevice, server: NbdServer) {
    this.vm = vm;
    this.instance = instance;
    this.device = device;
    this.#server = server;
  }

  /** Speaks the agent protocol (HELLO) over the VM's agent channel; once per VM connection. */
  async connect(timeoutMs = 180_000): Promise<AgentConnection> {
    const died = this.vm.exited.then((exit) => {
      throw new Error(
        `the VM exited (${exit.code}) before its agent answered:\n${exit.consoleTail}\n${exit.stderr}`,
      );
    });
    const conn = this.#connections++ === 0 ? this.vm.agent : this.vm.connectAgent();
    this.#sandbox = await Promise.race([
      conn.then((c) => AgentConnection.connect(c, { signal: AbortSignal.timeout(timeoutMs) })),
      died,
    ]);
    return this.#sandbox;
  }

  /** The connected sandbox. */
  get sandbox(): AgentConnection {
    if (!this.#sandbox) throw new Error("not connected");
    return this.#sandbox;
  }

  /**
   * Ends the agent session and hangs up the channel (QEMU's end too), then waits until the
   * agent says it waits for a host again: the state a ready snapshot is taken in.
   */
  async detach(timeoutMs = 60_000): Promise<void> {
    const before = countLines(this.vm.consoleTail(200), "waiting for the host");
    await this.#sandbox?.close();
    this.#sandbox = undefined;
    const deadline = Date.now() + timeoutMs;
    while (countLines(this.vm.consoleTail(200), "waiting for the host") <= before) {
      if (Date.now() > deadline) {
        throw new Error(`the agent did not go back to waiting:\n${this.vm.consoleTail(20)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Kills the VM and removes everything. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.vm.kill();
    await this.vm.exited;
    await this.#sandbox?.close().catch(() => {});
    await this.#server.close().catch(() => {});
    await this.device.close().catch(() => {});
    await removeInstance(this.instance).catch(() => {});
  }
}

function countLines(text: string, needle: string): number {
  return text.split("\n").filter((l) => l.includes(needle)).length;
}

/** A temporary data home with a store, and the shared guest assets. */
export class SnapshotLab implements AsyncDisposable {
  readonly dir: string;
  readonly store: Store;
  readonly assets: GuestAssets;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly #tscKhz: number | undefined;

  private constructor(
    dir: string,
    store: Store,
    assets: GuestAssets,
    machine: { cpus: number; memoryMiB: number },
    tscKhz: number | undefined,
  ) {
    this.dir = dir;
    this.store = store;
    this.assets = assets;
    this.cpus = machine.cpus;
    this.memoryMiB = machine.memoryMiB;
    this.#tscKhz = tscKhz;
  }

  /** Creates the lab (the assets must be built: `./shuru init`). */
  static async create(
    machine: { cpus?: number; memoryMiB?: number } = {},
  ): Promise<SnapshotLab> {
    const dir = await Deno.makeTempDir({ prefix: "shuru-snap-" });
    const assets = await ensureAssets({ assetsDir: homeLayout().assets });
    const store = await Store.open(join(dir, "store"), { log: () => {} });
    const tsc = await hostTscRate();
    return new SnapshotLab(
      dir,
      store,
      assets,
      { cpus: machine.cpus ?? 2, memoryMiB: machine.memoryMiB ?? 2048 },
      tsc?.khz,
    );
  }

  async #parts(options: GuestOptions) {
    const instance = await createInstance(join(this.dir, "instances"));
    const device = await this.store.openDevice(options.disk ?? { base: this.assets.rootfs }, {
      size: this.assets.rootfsBytes,
      overlayDir: instance.dir,
    });
    const server = await NbdServer.listen(device, {
      socketPath: instance.nbdSocket,
      exportName: EXPORT_NAME,
    });
    const launch: LaunchOptions = {
      assets: this.assets,
      instance,
      cpus: this.cpus,
      memoryMiB: this.memoryMiB,
      accel: "tcg",
      disk: { kind: "nbd", socket: instance.nbdSocket, exportName: EXPORT_NAME },
      ...(this.#tscKhz ? { tscKhz: this.#tscKhz } : {}),
      ...(options.vmGenerationId ? { vmGenerationId: options.vmGenerationId } : {}),
    };
    const undo = async () => {
      await server.close().catch(() => {});
      await device.close().catch(() => {});
      await removeInstance(instance).catch(() => {});
    };
    return { instance, device, server, launch, undo };
  }

  /** Boots a guest (cold). */
  async boot(options: GuestOptions = {}): Promise<Guest> {
    const p = await this.#parts(options);
    try {
      const vm = await launchGuest({
        ...p.launch,
        ...(options.ramFile ? { memory: { path: options.ramFile, shared: true } } : {}),
      });
      return new Guest(vm, p.instance, p.device, p.server);
    } catch (err) {
      await p.undo();
      throw err;
    }
  }

  /**
   * Starts a guest paused with `-incoming defer` and nothing loaded (to load a migration
   * stream by hand); `ramFile` is mapped private when given, else RAM is anonymous.
   */
  async incoming(options: GuestOptions = {}): Promise<Guest & { vm: QemuVm }> {
    const p = await this.#parts(options);
    try {
      const config = await guestConfig(p.launch);
      const vm = await new QemuBackend().startIncoming({
        ...config,
        ...(options.ramFile ? { memory: { path: options.ramFile, shared: false } } : {}),
      });
      await recordVmProcess(p.instance, vm.pid);
      return new Guest(vm, p.instance, p.device, p.server) as Guest & { vm: QemuVm };
    } catch (err) {
      await p.undo();
      throw err;
    }
  }

  /** Restores a guest from snapshot files; it is left paused. */
  async restore(snapshot: VmSnapshotFiles, options: GuestOptions = {}): Promise<Guest> {
    const p = await this.#parts(options);
    try {
      const vm = await restoreGuest(p.launch, snapshot);
      return new Guest(vm, p.instance, p.device, p.server);
    } catch (err) {
      await p.undo();
      throw err;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
