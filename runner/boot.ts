/**
 * The boot itself, on one of three paths (docs/snapshots.md):
 *
 * - **ready** (the default): resume the ready snapshot of this machine (`ready.ts`): its disk
 *   delta over the base image, its RAM file mapped private, its device state loaded; then the
 *   guest is made unique (`set_identity`: RNG reseeded, clock, hostname, machine-id) and the
 *   run's settings applied (network up or down, secrets, mounts into the 9p slots, ports).
 * - **checkpoint**: the same from a memory checkpoint (`--from NAME` of one saved with
 *   `--memory`): its disk, its verified RAM image, its state; its processes go on.
 * - **cold**: the kernel boots (`--cold`, the VZ backend, a disk-only or registry checkpoint, more
 *   mounts than slots, a kernel, initramfs or root filesystem of the user's own).
 *
 * @module
 */

import { resolve } from "node:path";
import { AgentConnection } from "../agent/mod.ts";
import type { MountTransport } from "../proto/mod.ts";
import type { SandboxSpec } from "../spec/mod.ts";
import { NbdServer } from "../nbd/mod.ts";
import {
  applyDelta,
  type BlockTable,
  type CowDevice,
  type DeviceSource,
  type MemoryImage,
  type Store,
} from "../store/mod.ts";
import {
  type Accel,
  createBackend,
  createInstance,
  type Instance,
  launchGuest,
  type LaunchOptions,
  removeInstance,
  restoreGuest,
  type Vm,
  VmError,
} from "../vm/mod.ts";
import { RunnerError } from "./errors.ts";
import { DEFAULT_GUEST_MTU, GuestNetwork, type NetLog, type NetworkHooks } from "./network.ts";
import {
  acquireReady,
  type BootFiles,
  EXPORT_NAME,
  GUEST_NET,
  MOUNT_SLOTS,
  mountTag,
  type ReadyLease,
  slotMounts,
} from "./ready.ts";
import { RunSecrets } from "./secrets.ts";
import type { HomeLayout } from "../host/mod.ts";

/** Which way a sandbox started. */
export type BootPath = "ready" | "checkpoint" | "cold";

/** The path chosen for a spec, and why cold when cold. */
export interface PathChoice {
  /** The path. */
  path: BootPath;
  /** Why it boots cold (for `-v`). */
  reason?: string;
  /** A line to print whatever the verbosity (a run that had to give up its warm start). */
  notice?: string;
}

/** Chooses the path of `spec` (see the module doc). */
export function choosePath(
  spec: SandboxSpec,
  facts: { memory: boolean; coldReason?: string },
): PathChoice {
  if (spec.cold) return { path: "cold", reason: "--cold" };
  if (spec.backend !== "qemu") return { path: "cold", reason: `the ${spec.backend} backend` };
  if (spec.mounts.length > MOUNT_SLOTS) {
    const reason = `${spec.mounts.length} mounts, a warm start has ${MOUNT_SLOTS} mount slots`;
    return { path: "cold", reason, notice: `shuru: booting cold: ${reason}` };
  }
  if (facts.memory) return { path: "checkpoint" };
  if (facts.coldReason) return { path: "cold", reason: facts.coldReason };
  return { path: "ready" };
}

/** What the boot needs that the caller worked out. */
export interface BootPlan {
  /** The sandbox. */
  spec: SandboxSpec;
  /** The data home. */
  home: HomeLayout;
  /** The boot files (kernel, initramfs, tools disk) and their architecture. */
  boot: BootFiles;
  /** The folder of the ready snapshots of the disk's base image (path "ready"). */
  readyDir: string;
  /** The store. */
  store: Store;
  /** The disk's source. */
  source: DeviceSource;
  /** The disk size in bytes (ignored when resuming a memory checkpoint: its own). */
  diskBytes: number;
  /** The accelerator. */
  accel: Accel;
  /** Host TSC rate, kHz. */
  tscKhz?: number;
  /** The memory checkpoint to resume (path "checkpoint"). */
  memory?: MemoryImage;
  /** Instance folder name. */
  instanceId?: string;
  /** The network's hooks. */
  net?: NetworkHooks;
  /** `--net-log`. */
  netLog?: NetLog;
  /** Kernel messages (cold). */
  verbose?: boolean;
  /** Console lines. */
  onConsoleLine?: (line: string) => void;
  /** One-line notices. */
  notice: (line: string) => void;
  /** Agent deadline. */
  agentTimeoutMs?: number;
  /** Abort. */
  signal?: AbortSignal;
}

/** What a boot made, for `BootedSandbox`. */
export interface BootParts {
  path: BootPath;
  agent: AgentConnection;
  vm: Vm;
  instance: Instance;
  device: CowDevice;
  server: NbdServer;
  network?: GuestNetwork;
  /** The run's secrets (their CA goes into the guest). */
  secrets?: RunSecrets;
  /** The RAM file the VM maps private and its table when known (memory checkpoints). */
  ramBase?: { file: string; table?: BlockTable };
  /** The device mounts are on (the backend's: 9p, or VZ's virtio-fs). */
  mountTransport: MountTransport;
  /** Milliseconds from the start of the boot at which each phase ended. */
  phases: Record<string, number>;
  /** Undoes everything (reverse order). */
  unwind: () => Promise<void>;
}

/** Options of {@linkcode bootGuest}. */
export interface BootGuestOptions {
  /** Milliseconds since the boot started. */
  since: () => number;
  /** Rebuild the ready snapshot first (its restore failed). */
  rebuild?: string;
}

/**
 * Boots `plan` on `path` up to a connected, unique agent with the run's network state (mounts,
 * secrets and ports are the caller's). Undoes everything it made when it fails.
 */
export async function bootGuest(
  plan: BootPlan,
  path: BootPath,
  options: BootGuestOptions,
): Promise<BootParts> {
  const { since } = options;
  const phases: Record<string, number> = {};
  let lease: ReadyLease | undefined;
  if (path === "ready") {
    if (!("base" in plan.source)) throw new TypeError("a warm start needs a base image");
    lease = await acquireReady({
      home: plan.home,
      root: plan.readyDir,
      boot: plan.boot,
      rootfs: plan.source.base,
      shape: {
        cpus: plan.spec.cpus,
        memoryMiB: plan.spec.memoryMiB,
        diskSizeMiB: Math.round(plan.diskBytes / 1048576),
        accel: plan.accel,
      },
      ...(plan.tscKhz ? { tscKhz: plan.tscKhz } : {}),
      onNotice: plan.notice,
      ...(options.rebuild ? { rebuild: options.rebuild } : {}),
      // A guest of another architecture boots emulated, several times slower.
      ...(plan.agentTimeoutMs ? { agentTimeoutMs: Math.max(plan.agentTimeoutMs, 180_000) } : {}),
    });
    phases.ready = since();
  }
  plan.signal?.throwIfAborted();
  const cleanup: (() => Promise<unknown>)[] = [];
  const unwind = async () => {
    for (const fn of cleanup.reverse()) await fn().catch(() => {});
  };
  try {
    const instance = await createInstance(
      plan.home.instances,
      plan.instanceId !== undefined ? { id: plan.instanceId } : {},
    );
    cleanup.push(() => removeInstance(instance));
    const device = await plan.store.openDevice(
      plan.source,
      path === "checkpoint"
        ? { overlayDir: instance.dir, arch: plan.boot.arch }
        : { size: plan.diskBytes, overlayDir: instance.dir, arch: plan.boot.arch },
    );
    cleanup.push(() => device.close());
    if (lease) {
      await applyDelta(device, lease.snapshot.record.disk, lease.snapshot.diskData);
    }
    const server = await NbdServer.listen(device, {
      socketPath: instance.nbdSocket,
      exportName: EXPORT_NAME,
    });
    cleanup.push(() => server.close());
    phases.device = since();

    const warm = path !== "cold";
    const backend = createBackend(plan.spec.backend, {
      ...(plan.onConsoleLine ? { onConsoleLine: plan.onConsoleLine } : {}),
      onNotice: plan.notice,
    });
    // Cold: a NIC only with a network. Warm: the NIC always exists (the snapshot has one);
    // without a network it reaches a stack that allows nothing, and it is taken down.
    const net = plan.spec.network || warm
      ? await startNetwork(plan, instance, {
        wanted: plan.spec.network !== undefined,
        // VZ takes the NIC's host end as a file handle: one end of a socket pair.
        ...(backend.netTransport === "pair" ? { link: "pair" as const } : {}),
      })
      : undefined;
    const network = net?.network;
    if (network) cleanup.push(() => network.close());
    const mounts = plan.spec.mounts.map((m, i) => ({
      tag: mountTag(i),
      hostPath: resolve(m.host),
      readOnly: m.readOnly,
    }));
    const launch: LaunchOptions = {
      assets: plan.boot,
      instance,
      cpus: plan.spec.cpus,
      memoryMiB: plan.spec.memoryMiB,
      accel: plan.accel,
      disk: { kind: "nbd", socket: instance.nbdSocket, exportName: EXPORT_NAME },
      mounts,
      ...(network ? { net: network.net } : {}),
      ...(plan.verbose ? { verbose: true } : {}),
      ...(plan.tscKhz ? { tscKhz: plan.tscKhz } : {}),
      backend,
    };
    let vm: Vm;
    let ramBase: BootParts["ramBase"];
    if (!warm) {
      vm = await launchGuest(launch);
    } else {
      const empty = resolve(instance.dir, "empty");
      await Deno.mkdir(empty, { mode: 0o700 });
      launch.mounts = slotMounts(mounts, empty);
      // The snapshot's NIC has the default MTU; the run's own is set with net_config.
      launch.net = { ...network!.net, mtu: DEFAULT_GUEST_MTU };
      if (lease) {
        const ready = lease.snapshot;
        if (ready.record.tscKhz) launch.tscKhz = ready.record.tscKhz;
        vm = await restoreGuest(launch, {
          ramFile: ready.ramFile,
          stateFile: ready.stateFile,
          machine: ready.record.machine,
        }, plan.signal);
        ramBase = { file: ready.ramFile };
      } else {
        const image = plan.memory!;
        const machine = image.machine;
        if (typeof machine.cpus === "number") launch.cpus = machine.cpus;
        if (typeof machine.memoryMiB === "number") launch.memoryMiB = machine.memoryMiB;
        const ram = await plan.store.materializeMemory(image);
        const stateFile = resolve(instance.dir, "state");
        await Deno.writeFile(stateFile, image.state, { mode: 0o600 });
        vm = await restoreGuest(launch, { ramFile: ram.path, stateFile, machine }, plan.signal);
        ramBase = { file: ram.path, table: image.table };
      }
    }
    lease?.release();
    lease = undefined;
    cleanup.push(async () => {
      vm.kill();
      await vm.exited;
    });
    phases.vmStarted = since();

    const timeout = AbortSignal.timeout(plan.agentTimeoutMs ?? 120_000);
    const signal = plan.signal ? AbortSignal.any([timeout, plan.signal]) : timeout;
    if (warm) {
      await vm.resume();
      phases.resumed = since();
    }
    const agent = await connectAgent(vm, signal);
    cleanup.push(() => agent.close());
    phases.agentReady = since();
    if (warm) {
      // Unique before anything else runs, and the network as this run wants it.
      await Promise.all([
        agent.setIdentity({
          hostname: "shuru",
          machineId: crypto.randomUUID().replaceAll("-", ""),
        }),
        // The ready snapshot's NIC is down; a memory checkpoint's may be up.
        plan.spec.network
          ? agent.netConfig({
            up: true,
            ...GUEST_NET,
            mtu: network?.net.mtu ?? DEFAULT_GUEST_MTU,
          })
          : path === "ready"
          ? Promise.resolve()
          : agent.netConfig({ up: false }),
      ]);
      phases.identity = since();
    }
    return {
      path,
      agent,
      vm,
      instance,
      device,
      server,
      ...(network ? { network } : {}),
      ...(net?.secrets ? { secrets: net.secrets } : {}),
      ...(ramBase ? { ramBase } : {}),
      mountTransport: backend.mountTransport ?? "9p",
      phases,
      unwind,
    };
  } catch (err) {
    lease?.release();
    await unwind();
    throw err;
  }
}

/** True when `err` says a restore failed before the guest ran (a bad or foreign snapshot). */
export function isRestoreFailure(err: unknown): boolean {
  return (err instanceof VmError && err.code === "restore_failed") ||
    (err instanceof Error && err.name === "StoreError" &&
      (err as { code?: string }).code === "corrupt_chunk");
}

async function startNetwork(
  plan: BootPlan,
  instance: Instance,
  how: { wanted: boolean; link?: "pair" },
): Promise<{ network: GuestNetwork; secrets?: RunSecrets }> {
  const { wanted } = how;
  const link = how.link ?? plan.net?.link;
  const spec = plan.spec;
  const netLog = plan.netLog;
  let secrets: RunSecrets | undefined;
  if (!wanted) {
    return {
      network: GuestNetwork.listen(instance.netSocket, {
        allowNet: false,
        ...(plan.net?.mtu ? { mtu: plan.net.mtu } : {}),
        ...(link ? { link } : {}),
        vmSocket: instance.netVmSocket,
        onError: plan.notice,
      }),
    };
  }
  const { secrets: secretSettings, ...settings } = spec.network!;
  if (secretSettings && secretSettings.length > 0) {
    secrets = await RunSecrets.create(secretSettings, { onError: plan.notice });
  }
  const terminator = secrets?.terminator;
  const hooks = plan.net ?? {};
  const network = GuestNetwork.listen(instance.netSocket, {
    ...settings,
    ...hooks,
    ...(netLog || hooks.onConnection
      ? {
        onConnection: (r) => {
          netLog?.write(r);
          hooks.onConnection?.(r);
        },
      }
      : {}),
    vmSocket: instance.netVmSocket,
    ...(link ? { link } : {}),
    onError: plan.notice,
    ...(terminator
      ? { dial: (t) => terminator.dial(t), inspect: (n) => terminator.handles(n) }
      : {}),
  });
  return { network, ...(secrets ? { secrets } : {}) };
}

/** Waits for the agent's HELLO, failing early (with the console tail) if the VM dies. */
export async function connectAgent(vm: Vm, signal: AbortSignal): Promise<AgentConnection> {
  const died = vm.exited.then((exit) => {
    throw new RunnerError(
      "boot_failed",
      `Cannot boot the guest: the VM exited (code ${exit.code}) before its agent started.\n` +
        `Last console lines:\n${exit.consoleTail || "(none)"}${
          exit.stderr ? `\nQEMU said: ${exit.stderr}` : ""
        }`,
    );
  });
  try {
    return await Promise.race([
      vm.agent.then((conn) => AgentConnection.connect(conn, { signal })),
      died,
    ]);
  } catch (err) {
    if (err instanceof RunnerError) throw err;
    if (signal.aborted && !(signal.reason instanceof DOMException)) throw signal.reason;
    throw new RunnerError(
      "boot_failed",
      `Cannot reach the guest agent: ${(err as Error).message}.\nLast console lines:\n${
        vm.consoleTail(20) || "(none)"
      }`,
      { cause: err },
    );
  }
}
