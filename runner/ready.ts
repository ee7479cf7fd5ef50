/**
 * Ready snapshots: a guest booted once to a ready agent and saved whole (RAM, device state, the
 * disk blocks its boot changed), so every later start resumes it instead of booting
 * (docs/snapshots.md). One exists per machine shape: the guest architecture, the boot files
 * (kernel, initramfs, tools disk), the root filesystem it boots (shuru's image or an `--image`),
 * the QEMU build, the accelerator, CPUs, memory, disk size and the device set (root disk, tools
 * disk, agent channel, {@linkcode MOUNT_SLOTS} 9p slots, a NIC) and the machine description's
 * format; a change to any of them names another one.
 *
 * Where: beside the root filesystem it is made of, so data homes that share it share the
 * snapshot: `<assets>/ready/<key>/` for shuru's image, `<image folder>/ready/<key>/` for an
 * `--image` (removed with it by `shuru prune --images`), with `<key>.lock`:
 *
 * ```
 * ready/<key>/ready.json   what it was made from, the machine, the files' identities and hashes
 * ready/<key>/ram          the guest RAM (sparse, exactly the memory size), mapped private
 * ready/<key>/state        the device state (xen-save-devices-state)
 * ready/<key>/disk.data    the disk blocks the boot changed over the base image (store/delta.ts)
 * ```
 *
 * Made once on first need, under the lock's exclusive hold, so concurrent first starts build it
 * once; users hold the lock shared while their QEMU opens the files. Checked at every use before
 * any guest runs (identity of the RAM file, hashes of the state and the disk blocks); a damaged
 * one is rebuilt with one notice.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { AgentConnection } from "../agent/mod.ts";
import { findCommand, type GuestArch, type HomeLayout } from "../host/mod.ts";
import { NbdServer } from "../nbd/mod.ts";
import { blake3, type DiskDelta, initHasher, Store, toHex } from "../store/mod.ts";
import {
  type Accel,
  createInstance,
  type Instance,
  launchGuest,
  MACHINE_FORMAT,
  machineFor,
  type MountConfig,
  removeInstance,
  type Vm,
} from "../vm/mod.ts";
import { RunnerError } from "./errors.ts";
import { DEFAULT_GUEST_MTU, GuestNetwork } from "./network.ts";

/** The guest's address on shuru's network (what the stack's DHCP hands out). */
export const GUEST_NET = { address: "10.0.2.15", prefix: 24, gateway: "10.0.2.2" } as const;

/** Version of the ready snapshot layout and recipe (bumped when either changes). */
export const READY_FORMAT = 4;

/**
 * 9p device slots every ready snapshot has: a run mounts its folders into the first ones after
 * the resume; a run with more mounts boots cold. Each costs a virtio-mmio transport and a
 * probe at boot, nothing while unused.
 */
export const MOUNT_SLOTS = 4;

/** The 9p mount tag of slot (and mount) `i`. */
export function mountTag(i: number): string {
  // 9p tags are limited to 31 characters, virtio-fs's to 36.
  return `shuru${i}`;
}

/** The export name of the root disk on the NBD server. */
export const EXPORT_NAME = "root";

/** The machine a ready snapshot is made for (the run's choices that shape the VM). */
export interface ReadyShape {
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Disk size in MiB (the guest grows its filesystem to it at boot). */
  diskSizeMiB: number;
  /** The accelerator (resolved). */
  accel: Accel;
}

/** The boot files of a guest (`LaunchOptions.assets`). */
export interface BootFiles {
  /** The kernel. */
  kernel: string;
  /** The initramfs. */
  initramfs: string;
  /** The tools disk. */
  tools?: string;
  /** Their architecture. */
  arch: GuestArch;
}

/** A file's identity: it changed if any of these did. */
interface FileIdentity {
  path: string;
  size: number;
  mtimeMs: number;
  ino: number;
}

/** Everything a ready snapshot depends on; its hash names it. */
export interface ReadyInputs extends ReadyShape {
  /** {@linkcode READY_FORMAT}. */
  format: number;
  /** The machine description's format (`MACHINE_FORMAT`). */
  machineFormat: number;
  /** The guest architecture. */
  arch: GuestArch;
  /** The guest kernel, initramfs, tools disk and base image. */
  kernel: FileIdentity;
  initrd: FileIdentity;
  tools: FileIdentity | null;
  rootfs: FileIdentity;
  /** The QEMU program. */
  qemu: FileIdentity;
  /** 9p slots. */
  slots: number;
  /** The NIC's MTU. */
  mtu: number;
}

/** `ready.json`. */
export interface ReadyRecord {
  /** What it was made from. */
  inputs: ReadyInputs;
  /** The machine description (`vm.describe()`), compared before a restore loads the state. */
  machine: Record<string, unknown>;
  /** The host TSC rate the guest booted with (kHz), if known. */
  tscKhz?: number;
  /** The RAM file's identity when made. */
  ram: { size: number; ino: number; mtimeMs: number; ctimeMs: number };
  /** The state file's size and BLAKE3. */
  state: { bytes: number; hash: string };
  /** The disk blocks the boot changed. */
  disk: DiskDelta;
  /** ISO time it was made. */
  createdAt: string;
  /** How long making it took (ms): the boot to a ready agent, the save, in all. */
  build: { bootMs: number; saveMs: number; totalMs: number };
}

/** A checked ready snapshot. */
export interface ReadySnapshot {
  /** Its folder. */
  dir: string;
  /** Its key. */
  key: string;
  /** The RAM file (map it private). */
  ramFile: string;
  /** The device state file. */
  stateFile: string;
  /** The disk delta's data file. */
  diskData: string;
  /** Its record. */
  record: ReadyRecord;
}

/** A ready snapshot in use: hold it until the restored VM has loaded its files. */
export interface ReadyLease {
  /** The snapshot. */
  snapshot: ReadySnapshot;
  /** True when this call made it. */
  built: boolean;
  /** Lets a rebuild replace it. */
  release(): void;
}

/** Options of {@linkcode acquireReady}. */
export interface ReadyOptions {
  /** The data home (instances go there). */
  home: HomeLayout;
  /** The folder of ready snapshots ({@linkcode readyRoot}, {@linkcode imageReadyRoot}). */
  root: string;
  /** The boot files. */
  boot: BootFiles;
  /** The root filesystem it boots (the base image of its disk). */
  rootfs: string;
  /** The machine. */
  shape: ReadyShape;
  /** Host TSC rate in kHz for the boot (default: measured by the VM layer). */
  tscKhz?: number;
  /** One-line notices (making it, rebuilding a damaged one). */
  onNotice?: (line: string) => void;
  /** Milliseconds to wait for the agent while making it. @default 180000 */
  agentTimeoutMs?: number;
  /** Rebuild even if the current one checks out (its restore failed). */
  rebuild?: string;
}

/** The folder of ready snapshots of shuru's own image for `home` (beside the assets). */
export function readyRoot(home: HomeLayout): string {
  return join(home.assets, "ready");
}

/** The folder of ready snapshots of a converted `--image` whose root filesystem is `rootfs`. */
export function imageReadyRoot(rootfs: string): string {
  return join(dirname(rootfs), "ready");
}

async function identity(path: string): Promise<FileIdentity> {
  const st = await Deno.stat(path);
  return { path, size: st.size, mtimeMs: st.mtime?.getTime() ?? 0, ino: st.ino ?? 0 };
}

/**
 * The inputs of the ready snapshot for `shape` with `boot` over `rootfs` (stats of the files
 * involved).
 */
export async function readyInputs(
  boot: BootFiles,
  rootfs: string,
  shape: ReadyShape,
): Promise<ReadyInputs> {
  const machine = machineFor(boot.arch);
  const qemu = findCommand(machine.qemu);
  if (!qemu) {
    throw new RunnerError(
      "boot_failed",
      `Cannot start the ${boot.arch} VM: ${machine.qemu} not found; install it with: ` +
        `apt-get install ${machine.qemuPackage}`,
    );
  }
  return {
    format: READY_FORMAT,
    machineFormat: MACHINE_FORMAT,
    arch: boot.arch,
    cpus: shape.cpus,
    memoryMiB: shape.memoryMiB,
    diskSizeMiB: shape.diskSizeMiB,
    accel: shape.accel,
    kernel: await identity(boot.kernel),
    initrd: await identity(boot.initramfs),
    tools: boot.tools !== undefined ? await identity(boot.tools) : null,
    rootfs: await identity(rootfs),
    qemu: await identity(qemu),
    slots: MOUNT_SLOTS,
    mtu: DEFAULT_GUEST_MTU,
  };
}

/** The key (folder name) of `inputs`. */
export async function readyKey(inputs: ReadyInputs): Promise<string> {
  await initHasher();
  return toHex(blake3(new TextEncoder().encode(JSON.stringify(inputs)))).slice(0, 24);
}

/** Why the snapshot in `dir` cannot be used, or its record. */
async function check(dir: string, inputs: ReadyInputs): Promise<ReadyRecord | string> {
  let record: ReadyRecord;
  try {
    record = JSON.parse(await Deno.readTextFile(join(dir, "ready.json")));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "missing";
    return `its record is unreadable (${(err as Error).message})`;
  }
  if (JSON.stringify(record.inputs) !== JSON.stringify(inputs)) {
    return "it was made for another machine";
  }
  let ram: Deno.FileInfo;
  try {
    ram = await Deno.stat(join(dir, "ram"));
  } catch {
    return "its RAM file is missing";
  }
  const r = record.ram;
  if (ram.size !== r.size || ram.size !== inputs.memoryMiB * 1024 * 1024) {
    return `its RAM file is ${ram.size} bytes, not ${r.size}`;
  }
  if (
    (ram.ino ?? 0) !== r.ino || (ram.mtime?.getTime() ?? 0) !== r.mtimeMs ||
    (ram.ctime?.getTime() ?? 0) !== r.ctimeMs
  ) {
    return "its RAM file was changed after it was made";
  }
  let state: Uint8Array;
  try {
    state = await Deno.readFile(join(dir, "state"));
  } catch {
    return "its state file is missing";
  }
  await initHasher();
  if (state.length === 0 || state.length !== record.state.bytes) {
    return `its state file is ${state.length} bytes, not ${record.state.bytes}`;
  }
  if (toHex(blake3(state)) !== record.state.hash) return "its state file is damaged";
  return record;
}

function snapshotOf(dir: string, key: string, record: ReadyRecord): ReadySnapshot {
  return {
    dir,
    key,
    ramFile: join(dir, "ram"),
    stateFile: join(dir, "state"),
    diskData: join(dir, "disk.data"),
    record,
  };
}

/**
 * The ready snapshot for `options.shape`, made now if there is none (or it is damaged, or
 * `rebuild` says its restore failed: one notice each). Hold the lease until the VM restored
 * from it has loaded its state.
 */
export async function acquireReady(options: ReadyOptions): Promise<ReadyLease> {
  const root = options.root;
  await Deno.mkdir(root, { recursive: true, mode: 0o700 });
  const inputs = await readyInputs(options.boot, options.rootfs, options.shape);
  const key = await readyKey(inputs);
  const dir = join(root, key);
  const lockFile = await Deno.open(join(root, `${key}.lock`), {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  });
  let rebuildReason = options.rebuild;
  let built = false;
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      await lockFile.lock(false);
      const found = rebuildReason ? rebuildReason : await check(dir, inputs);
      if (typeof found !== "string") {
        const lease: ReadyLease = {
          snapshot: snapshotOf(dir, key, found),
          built,
          release: () => lockFile.close(),
        };
        return lease;
      }
      await lockFile.unlock();
      await lockFile.lock(true);
      try {
        // Another start may have made it while we waited.
        const again = rebuildReason ? rebuildReason : await check(dir, inputs);
        if (typeof again === "string") {
          options.onNotice?.(
            again === "missing"
              ? `shuru: making the ready snapshot for ${shapeText(options.shape)} ` +
                "(once per machine; later starts resume it)"
              : `shuru: the ready snapshot is unusable (${again}); rebuilding it`,
          );
          await build(dir, inputs, options);
          built = true;
        }
        rebuildReason = undefined;
      } finally {
        await lockFile.unlock();
      }
    }
    throw new RunnerError(
      "boot_failed",
      "Cannot make the ready snapshot: it keeps failing its check",
    );
  } catch (err) {
    lockFile.close();
    throw err;
  }
}

function shapeText(shape: ReadyShape): string {
  return `${shape.cpus} CPUs, ${shape.memoryMiB} MiB, a ${shape.diskSizeMiB} MiB disk`;
}

/** The 9p slots of a ready machine: the run's folders first, an empty folder in the rest. */
export function slotMounts(
  folders: { hostPath: string; readOnly: boolean }[],
  emptyDir: string,
): MountConfig[] {
  const out: MountConfig[] = [];
  for (let i = 0; i < MOUNT_SLOTS; i++) {
    const f = folders[i];
    out.push({
      tag: mountTag(i),
      hostPath: f?.hostPath ?? emptyDir,
      readOnly: f?.readOnly ?? true,
    });
  }
  return out;
}

/** Boots the guest, lets it settle to a ready agent, saves it, and publishes it in `dir`. */
async function build(dir: string, inputs: ReadyInputs, options: ReadyOptions): Promise<void> {
  const t0 = performance.now();
  const root = options.root;
  const tmp = join(root, `tmp-${crypto.randomUUID().slice(0, 8)}`);
  await Deno.mkdir(tmp, { mode: 0o700 });
  const cleanup: (() => Promise<unknown>)[] = [() => Deno.remove(tmp, { recursive: true })];
  let instance: Instance | undefined;
  try {
    instance = await createInstance(options.home.instances, {
      id: `ready-${crypto.randomUUID().slice(0, 8)}`,
    });
    const inst = instance;
    cleanup.push(() => removeInstance(inst));
    const empty = join(inst.dir, "empty");
    await Deno.mkdir(empty, { mode: 0o700 });
    const store = await Store.open(join(tmp, "store"), { log: () => {} });
    const device = await store.openDevice({ base: options.rootfs }, {
      size: inputs.diskSizeMiB * 1024 * 1024,
      overlayDir: inst.dir,
    });
    cleanup.push(() => device.close());
    const server = await NbdServer.listen(device, {
      socketPath: inst.nbdSocket,
      exportName: EXPORT_NAME,
    });
    cleanup.push(() => server.close());
    // A network that reaches nothing: the guest gets its DHCP lease at boot, and each run
    // brings the interface up or down (net_config) after the resume.
    const network = GuestNetwork.listen(inst.netSocket, { allowNet: false, onError: () => {} });
    cleanup.push(() => network.close());
    const ramFile = join(tmp, "ram");
    const vm = await launchGuest({
      assets: options.boot,
      instance: inst,
      cpus: inputs.cpus,
      memoryMiB: inputs.memoryMiB,
      accel: inputs.accel,
      disk: { kind: "nbd", socket: inst.nbdSocket, exportName: EXPORT_NAME },
      mounts: slotMounts([], empty),
      net: network.net,
      memory: { path: ramFile, shared: true },
      ...(options.tscKhz ? { tscKhz: options.tscKhz } : {}),
    });
    cleanup.push(async () => {
      vm.kill();
      await vm.exited;
    });
    const agent = await readyAgent(vm, options.agentTimeoutMs ?? 180_000);
    const machine = vm.describe() as unknown as Record<string, unknown>;
    const bootMs = performance.now() - t0;
    // Run the paths every start takes once, so the restored agent has them compiled (each
    // start repeats them; the values here are replaced then).
    await agent.setIdentity({
      hostname: "shuru",
      machineId: crypto.randomUUID().replaceAll("-", ""),
    });
    await agent.netConfig({ up: true, ...GUEST_NET, mtu: DEFAULT_GUEST_MTU });
    // Saved with the NIC down: a run without a network (the most common) needs no net_config.
    await agent.netConfig({ up: false });
    await agent.exec(["true"]);
    await agent.stat("/");
    await agent.detach();
    const t1 = performance.now();
    await vm.pause();
    const snapshot = await device.snapshot();
    await vm.saveState(join(tmp, "state"));
    const disk = await snapshot.exportDelta(join(tmp, "disk.data"));
    snapshot.release();
    // The RAM file is final once QEMU is gone.
    vm.kill();
    await vm.exited;
    await agent.close().catch(() => {});
    await Deno.chmod(ramFile, 0o600);
    await Deno.chmod(join(tmp, "state"), 0o600);
    using ram = await Deno.open(ramFile, { read: true, write: true });
    await ram.sync();
    const ramStat = await ram.stat();
    const state = await Deno.readFile(join(tmp, "state"));
    const record: ReadyRecord = {
      inputs,
      machine,
      ...(options.tscKhz ? { tscKhz: options.tscKhz } : {}),
      ram: {
        size: ramStat.size,
        ino: ramStat.ino ?? 0,
        mtimeMs: ramStat.mtime?.getTime() ?? 0,
        ctimeMs: ramStat.ctime?.getTime() ?? 0,
      },
      state: { bytes: state.length, hash: toHex(blake3(state)) },
      disk,
      createdAt: new Date().toISOString(),
      build: {
        bootMs: Math.round(bootMs),
        saveMs: Math.round(performance.now() - t1),
        totalMs: Math.round(performance.now() - t0),
      },
    };
    await Deno.remove(join(tmp, "store"), { recursive: true });
    await Deno.writeTextFile(join(tmp, "ready.json"), JSON.stringify(record, null, 1) + "\n", {
      mode: 0o600,
    });
    await publish(tmp, dir);
    // Snapshots of boot files that are gone (an older asset version) go now.
    await pruneReady(root, { keepOtherFormats: true }).catch(() => {});
  } catch (err) {
    throw new RunnerError(
      "boot_failed",
      `Cannot make the ready snapshot: ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    for (const fn of cleanup.reverse()) await fn().catch(() => {});
  }
}

/** Waits for the agent of a booting VM. */
async function readyAgent(vm: Vm, timeoutMs: number): Promise<AgentConnection> {
  const died = vm.exited.then((exit) => {
    throw new Error(
      `the VM exited (code ${exit.code}) before its agent started.\nLast console lines:\n${
        exit.consoleTail || "(none)"
      }${exit.stderr ? `\nQEMU said: ${exit.stderr}` : ""}`,
    );
  });
  const agent = await Promise.race([
    vm.agent.then((conn) =>
      AgentConnection.connect(conn, { signal: AbortSignal.timeout(timeoutMs) })
    ),
    died,
  ]);
  return agent;
}

/** What {@linkcode pruneReady} removed. */
export interface ReadyPruneResult {
  /** Folder names under the root (snapshots and leftovers). */
  removed: string[];
  /** Bytes freed (allocated blocks: the RAM files are sparse). */
  bytes: number;
}

/** Leftovers of a build that died (a `tmp-` or `.old-` folder) older than this are removed. */
const STALE_LEFTOVER_MS = 60 * 60 * 1000;

/**
 * Removes the ready snapshots in `root` that no start can use again: those whose boot files,
 * root filesystem or QEMU changed or are gone (their key is never computed again), those of an
 * older format (unless `keepOtherFormats`: another shuru sharing the assets may use them), and
 * leftovers of builds that died. A snapshot in use keeps working: its QEMU has its files open.
 */
export async function pruneReady(
  root: string,
  options: { keepOtherFormats?: boolean } = {},
): Promise<ReadyPruneResult> {
  const result: ReadyPruneResult = { removed: [], bytes: 0 };
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(root));
  } catch {
    return result;
  }
  const remove = async (name: string) => {
    const path = join(root, name);
    result.bytes += await allocatedBytes(path).catch(() => 0);
    await Deno.remove(path, { recursive: true }).catch(() => {});
    await Deno.remove(join(root, `${name}.lock`)).catch(() => {});
    result.removed.push(name);
  };
  for (const e of entries) {
    if (!e.isDirectory) continue;
    const path = join(root, e.name);
    if (e.name.startsWith("tmp-") || e.name.includes(".old-")) {
      const st = await Deno.stat(path).catch(() => undefined);
      if (st && Date.now() - (st.mtime?.getTime() ?? 0) > STALE_LEFTOVER_MS) await remove(e.name);
      continue;
    }
    let inputs: ReadyInputs | undefined;
    try {
      inputs = (JSON.parse(await Deno.readTextFile(join(path, "ready.json"))) as ReadyRecord)
        .inputs;
    } catch {
      // Being made right now (under its lock) or broken: a build replaces a broken one.
      continue;
    }
    const otherFormat = inputs.format !== READY_FORMAT;
    if (otherFormat && options.keepOtherFormats) continue;
    if (otherFormat || !(await inputsCurrent(inputs))) await remove(e.name);
  }
  return result;
}

async function inputsCurrent(inputs: ReadyInputs): Promise<boolean> {
  const files = [inputs.kernel, inputs.initrd, inputs.rootfs, inputs.qemu, inputs.tools];
  for (const f of files) {
    if (f === null) continue;
    if (!f || typeof f.path !== "string") return false;
    const now = await identity(f.path).catch(() => undefined);
    if (!now || JSON.stringify(now) !== JSON.stringify(f)) return false;
  }
  return true;
}

async function allocatedBytes(path: string): Promise<number> {
  const st = await Deno.lstat(path);
  if (!st.isDirectory) return (st.blocks ?? 0) * 512;
  let total = 0;
  for await (const e of Deno.readDir(path)) total += await allocatedBytes(join(path, e.name));
  return total;
}

/** Renames `tmp` to `dir`, replacing what is there (readers keep their open files). */
async function publish(tmp: string, dir: string): Promise<void> {
  const old = `${dir}.old-${crypto.randomUUID().slice(0, 8)}`;
  let moved = false;
  try {
    await Deno.rename(dir, old);
    moved = true;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.rename(tmp, dir);
  if (moved) await Deno.remove(old, { recursive: true }).catch(() => {});
}
