/**
 * Turns a validated {@linkcode VzConfig} into Virtualization.framework objects and drives the
 * machine: start, graceful stop, forced stop, pause/resume, save/restore of its state, state
 * polling and the delegate's stop messages. macOS only (Apple silicon, macOS 14 or later); the
 * module type-checks everywhere, and `deno check` on Linux covers it.
 *
 * **Threading.** The VM is created with `initWithConfiguration:` (no queue), so it belongs to
 * the main dispatch queue: every call below must run on the main thread, and every completion
 * handler and delegate method arrives there as a block the main run loop runs. Deno's main
 * module runs on the main thread (`deno test` modules and Workers do not: checked at open), and
 * a {@linkcode RunLoopPump} runs the loop from a timer, so callbacks run inside
 * `CFRunLoopRunInMode`, on the JS thread, synchronously: no thread-safe callbacks, no locks.
 *
 * **Call sequence** (minimum macOS in brackets): `VZLinuxBootLoader initWithKernelURL:` [11] +
 * `setInitialRamdiskURL:` + `setCommandLine:`; `VZGenericPlatformConfiguration` [12] +
 * `setMachineIdentifier:` (`VZGenericMachineIdentifier` [13]); `VZVirtualMachineConfiguration`
 * [11] `setCPUCount:`/`setMemorySize:`; storage `VZNetworkBlockDeviceStorageDeviceAttachment
 * initWithURL:timeout:forcedReadOnly:synchronizationMode:error:` [14] in
 * `VZVirtioBlockDeviceConfiguration initWithAttachment:`; console `VZFileHandleSerialPortAttachment`
 * in `VZVirtioConsoleDeviceSerialPortConfiguration` (hvc0); the agent's port
 * `VZVirtioConsolePortConfiguration` [13] named `shuru.agent` in a
 * `VZVirtioConsoleDeviceConfiguration`; shares `VZSharedDirectory` → `VZSingleDirectoryShare` →
 * `VZVirtioFileSystemDeviceConfiguration initWithTag:` [12]; network
 * `VZFileHandleNetworkDeviceAttachment` [11] + `setMaximumTransmissionUnit:` [13] in
 * `VZVirtioNetworkDeviceConfiguration`; `VZVirtioEntropyDeviceConfiguration`;
 * `validateWithError:`, `validateSaveRestoreSupportWithError:` [14]; `VZVirtualMachine
 * initWithConfiguration:` + `setDelegate:`; `startWithCompletionHandler:`,
 * `requestStopWithError:`, `stopWithCompletionHandler:` [12], `pause…`/`resume…`,
 * `saveMachineStateToURL:completionHandler:` / `restoreMachineStateFromURL:…` [14].
 *
 * Status: written against Apple's documentation and Code-Hex/vz's Objective-C; it has not run
 * on a Mac yet (docs/macos.md says what has).
 *
 * @module
 */

import { BlockScope } from "../ffi/mod.ts";
import { isMainThread, mainRunLoop, pumpPolicy, type RunLoop, RunLoopPump } from "../ffi/mod.ts";
import { Objc, ObjcError, type Ptr, type RuntimeClass } from "../ffi/mod.ts";
import { openLibrary } from "../ffi/mod.ts";
import { VmError } from "./errors.ts";
import type { VzConfig, VzLimits } from "./vz_config.ts";

/** `VZVirtualMachineState` values, by their number. */
export const VZ_STATES = [
  "stopped",
  "running",
  "paused",
  "error",
  "starting",
  "pausing",
  "resuming",
  "stopping",
  "saving",
  "restoring",
] as const;

/** A VZ machine state. */
export type VzState = typeof VZ_STATES[number];

/** `VZDiskSynchronizationMode`. */
export const VZ_DISK_SYNC = { full: 0, none: 1 } as const;

/** `VZErrorCode` values shuru reacts to (VZErrorDomain). */
export const VZ_ERROR = {
  INTERNAL: 1,
  INVALID_CONFIGURATION: 2,
  INVALID_STATE: 3,
  INVALID_STATE_TRANSITION: 4,
  SAVE: 11,
  RESTORE: 12,
  NBD_NEGOTIATION_FAILED: 20001,
  NBD_DISCONNECTED: 20002,
} as const;

/** The first Darwin release of macOS 14 (the NBD attachment and save/restore need it). */
export const MIN_DARWIN = 23;

/** The pump's view of a state. */
export function stateCategory(state: VzState): "stopped" | "running" | "paused" | "transition" {
  if (state === "stopped" || state === "error") return "stopped";
  if (state === "running" || state === "paused") return state;
  return "transition";
}

/**
 * Why this host cannot run VZ guests, or `undefined` when it can (as far as can be told before
 * loading the framework): macOS on Apple silicon, Darwin 23 (macOS 14) or later, main thread.
 */
export function vzHostProblem(host: {
  os: string;
  arch: string;
  osRelease: string;
  mainThread: boolean;
}): string | undefined {
  if (host.os !== "darwin") {
    return `the vz backend needs macOS (Virtualization.framework); this host runs ${host.os}`;
  }
  if (host.arch !== "aarch64") {
    return "the vz backend needs Apple silicon (shuru's guests are arm64)";
  }
  const darwin = Number(host.osRelease.split(".")[0]);
  if (!(darwin >= MIN_DARWIN)) {
    return `the vz backend needs macOS 14 or later (this is Darwin ${host.osRelease})`;
  }
  if (!host.mainThread) {
    return "the vz backend must run on the process's main thread (not in a Worker or " +
      "`deno test`): run it through the shuru command";
  }
  return undefined;
}

const ENTITLEMENT = "com.apple.security.virtualization";

/** Virtualization.framework, loaded, with its Objective-C runtime and the main run loop. */
export class VzFramework {
  /** The Objective-C runtime (Apple's), with Foundation and Virtualization loaded. */
  readonly objc: Objc;
  readonly #runLoop: RunLoop;
  static #shared: VzFramework | undefined;

  private constructor(objc: Objc, runLoop: RunLoop) {
    this.objc = objc;
    this.#runLoop = runLoop;
  }

  /**
   * Loads the framework once per process.
   *
   * @throws {VmError} `unsupported_host` when this host cannot run it.
   */
  static open(): VzFramework {
    if (VzFramework.#shared) return VzFramework.#shared;
    const problem = vzHostProblem({
      os: Deno.build.os,
      arch: Deno.build.arch,
      osRelease: Deno.build.os === "darwin" ? Deno.osRelease() : "",
      mainThread: Deno.build.os === "darwin" && isMainThread(),
    });
    if (problem) throw new VmError("unsupported_host", `Cannot start the VM: ${problem}`);
    const objc = Objc.open();
    // Loading the framework registers its classes with the runtime.
    objc.keepLoaded(openLibrary("virtualization", {}));
    const fw = new VzFramework(objc, mainRunLoop());
    if (!objc.send("bool()", objc.cls("VZVirtualMachine"), "isSupported")) {
      throw new VmError(
        "unsupported_host",
        "Cannot start the VM: Virtualization.framework says this Mac does not support " +
          "virtual machines (inside a VM without nested virtualization?)",
      );
    }
    VzFramework.#shared = fw;
    return fw;
  }

  /** The framework's CPU and memory limits. */
  limits(): VzLimits {
    const o = this.objc;
    const cls = o.cls("VZVirtualMachineConfiguration");
    return {
      minCpus: Number(o.send("u64()", cls, "minimumAllowedCPUCount")),
      maxCpus: Number(o.send("u64()", cls, "maximumAllowedCPUCount")),
      minMemory: Number(o.send("u64()", cls, "minimumAllowedMemorySize")),
      maxMemory: Number(o.send("u64()", cls, "maximumAllowedMemorySize")),
    };
  }

  /** One pass of the main run loop. */
  runOnce(): void {
    this.#runLoop.runOnce();
  }
}

/** File descriptors for the devices' host ends (connected sockets; the caller closes them after
 * {@linkcode VzMachine.close}). */
export interface VzFds {
  /** One per {@linkcode VzConfig.serialPorts} entry. */
  serialPorts: number[];
  /** One per {@linkcode VzConfig.consolePorts} entry. */
  consolePorts: number[];
  /** One per {@linkcode VzConfig.network} entry. */
  network: number[];
}

/** How a machine stopped. */
export interface VzStop {
  /** The guest stopped itself (power-off, or a reset, which VZ treats as a stop). */
  guest: boolean;
  /** The framework's error, when it stopped because of one. */
  error?: string;
}

/** What the machine reports. */
export interface VzEvents {
  /** The machine stopped (called once). */
  onStop(stop: VzStop): void;
  /** The NBD client connected, or failed (with the framework's message). */
  onDisk?(event: { connected: true } | { connected: false; error: string }): void;
  /** A network attachment was disconnected. */
  onNetworkDisconnected?(error: string): void;
}

/** Machines by the address of their VZVirtualMachine (for the delegates). */
const byVm = new Map<bigint, VzMachine>();
/** Machines by the address of their NBD attachments. */
const byAttachment = new Map<bigint, VzMachine>();
let delegates: { vm: RuntimeClass; nbd: RuntimeClass } | undefined;

const key = (p: Deno.PointerValue) => BigInt(Deno.UnsafePointer.value(p));

/** The process-wide delegate classes (class names are global; defined once). */
function delegateClasses(objc: Objc): { vm: RuntimeClass; nbd: RuntimeClass } {
  if (delegates) return delegates;
  const vm = objc.defineClass("ShuruVZMachineDelegate", [
    {
      selector: "guestDidStopVirtualMachine:",
      signature: "void(id)",
      fn: (_self, machine) => byVm.get(key(machine))?.stopped({ guest: true }),
    },
    {
      selector: "virtualMachine:didStopWithError:",
      signature: "void(id,id)",
      fn: (_self, machine, error) => {
        const m = byVm.get(key(machine));
        m?.stopped({ guest: false, error: m.describe("run the VM", error) });
      },
    },
    {
      selector: "virtualMachine:networkDevice:attachmentWasDisconnectedWithError:",
      signature: "void(id,id,id)",
      fn: (_self, machine, _device, error) => {
        const m = byVm.get(key(machine));
        m?.events.onNetworkDisconnected?.(m.describe("keep the network attached", error));
      },
    },
  ], { protocols: ["VZVirtualMachineDelegate"] });
  const nbd = objc.defineClass("ShuruVZDiskDelegate", [
    {
      selector: "attachmentWasConnected:",
      signature: "void(id)",
      fn: (_self, attachment) =>
        byAttachment.get(key(attachment))?.events.onDisk?.({ connected: true }),
    },
    {
      selector: "attachment:didEncounterError:",
      signature: "void(id,id)",
      fn: (_self, attachment, error) => {
        const m = byAttachment.get(key(attachment));
        m?.events.onDisk?.({ connected: false, error: m.describe("reach the NBD server", error) });
      },
    },
  ], { protocols: ["VZNetworkBlockDeviceStorageDeviceAttachmentDelegate"] });
  delegates = { vm, nbd };
  return delegates;
}

/** Turns a framework error into a {@linkcode VmError} with the right code and advice. */
function vmError(err: unknown): VmError {
  if (err instanceof VmError) return err;
  if (err instanceof ObjcError) {
    if (err.message.includes(ENTITLEMENT)) {
      return new VmError(
        "not_signed",
        `${err.message}. Run \`shuru init\` (it signs a copy of Deno with the ${ENTITLEMENT} ` +
          "entitlement into the data home) and start shuru through its ./shuru launcher",
        { cause: err },
      );
    }
    return new VmError("vz_failed", err.message, { cause: err });
  }
  return new VmError("vz_failed", `Cannot run the VM: ${(err as Error).message}`, { cause: err });
}

/** One Virtualization.framework machine. Create with {@linkcode VzMachine.create}. */
export class VzMachine implements Disposable {
  /** Event handlers. */
  readonly events: VzEvents;
  /** The machine identifier's data representation (persist it to restore a saved state). */
  readonly machineIdentifier: Uint8Array;
  /** `true`, or why this configuration cannot be saved and restored. */
  readonly saveRestore: true | string;
  readonly #fw: VzFramework;
  readonly #vm: Ptr;
  readonly #delegate: Ptr;
  readonly #attachments: bigint[];
  readonly #blocks = new BlockScope();
  readonly #pump: RunLoopPump;
  #pending = 0;
  #state: VzState = "stopped";
  #stopped = false;
  #closed = false;

  private constructor(
    fw: VzFramework,
    parts: {
      vm: Ptr;
      delegate: Ptr;
      attachments: bigint[];
      machineIdentifier: Uint8Array;
      saveRestore: true | string;
    },
    events: VzEvents,
  ) {
    this.#fw = fw;
    this.#vm = parts.vm;
    this.#delegate = parts.delegate;
    this.#attachments = parts.attachments;
    this.machineIdentifier = parts.machineIdentifier;
    this.saveRestore = parts.saveRestore;
    this.events = events;
    this.#pump = new RunLoopPump(() => this.#tick());
    byVm.set(key(parts.vm), this);
    for (const a of parts.attachments) byAttachment.set(a, this);
  }

  /**
   * Builds the framework objects for `config` (validated with `checkVzConfig` first), validates
   * them with the framework, and creates the machine (stopped).
   *
   * @throws {VmError} `not_signed`, `vz_failed` with the framework's message.
   */
  static create(fw: VzFramework, config: VzConfig, fds: VzFds, events: VzEvents): VzMachine {
    const o = fw.objc;
    const classes = delegateClasses(o);
    // Objects we made with alloc/init (+1): released once the VM holds its copy of the
    // configuration. Everything else is autoreleased by the pool.
    const owned: Ptr[] = [];
    const own = (p: Ptr) => {
      owned.push(p);
      return p;
    };
    const make = (cls: string) => own(o.create(cls));
    const init = (cls: string, sel: string, ...args: [Ptr] | [Ptr, Ptr]): Ptr =>
      own(
        args.length === 1
          ? o.obj("id(id)", o.alloc(cls), sel, args[0])
          : o.obj("id(id,id)", o.alloc(cls), sel, args[0], args[1]),
      );
    // The handles do not own the fds: the caller closes them once the machine is released
    // (a handle made before a failure must not close an fd the caller closes too).
    const fileHandle = (fd: number) =>
      own(
        o.obj(
          "id(i32,bool)",
          o.alloc("NSFileHandle"),
          "initWithFileDescriptor:closeOnDealloc:",
          fd,
          false,
        ),
      );
    try {
      return o.withPool(() => {
        const boot = init(
          "VZLinuxBootLoader",
          "initWithKernelURL:",
          o.fileUrl(config.bootLoader.kernel),
        );
        o.send("void(id)", boot, "setInitialRamdiskURL:", o.fileUrl(config.bootLoader.initrd));
        o.send("void(id)", boot, "setCommandLine:", o.str(config.bootLoader.commandLine));

        const platform = make("VZGenericPlatformConfiguration");
        const identifier = config.machineIdentifier === null
          ? make("VZGenericMachineIdentifier")
          : init(
            "VZGenericMachineIdentifier",
            "initWithDataRepresentation:",
            o.data(config.machineIdentifier),
          );
        o.send("void(id)", platform, "setMachineIdentifier:", identifier);

        const cfg = make("VZVirtualMachineConfiguration");
        o.send("void(id)", cfg, "setBootLoader:", boot);
        o.send("void(id)", cfg, "setPlatform:", platform);
        o.send("void(u64)", cfg, "setCPUCount:", BigInt(config.cpuCount));
        o.send("void(u64)", cfg, "setMemorySize:", BigInt(config.memorySize));

        const delegate = o.obj("id()", o.obj("id()", classes.nbd.cls, "alloc"), "init");
        own(delegate);
        const attachments: bigint[] = [];
        const disks = config.storage.map((disk) => {
          let attachment: Ptr;
          if (disk.kind === "nbd") {
            attachment = own(o.check("attach the NBD disk", (error) =>
              o.send(
                "id(id,f64,bool,i64,buf)",
                o.alloc("VZNetworkBlockDeviceStorageDeviceAttachment"),
                "initWithURL:timeout:forcedReadOnly:synchronizationMode:error:",
                o.url(disk.url),
                disk.timeoutSeconds,
                disk.forcedReadOnly,
                BigInt(VZ_DISK_SYNC[disk.synchronization]),
                error,
              )));
            o.send("void(id)", attachment, "setDelegate:", delegate);
            attachments.push(key(attachment));
          } else {
            attachment = own(o.check(`open the disk image ${disk.path}`, (error) =>
              o.send(
                "id(id,bool,buf)",
                o.alloc("VZDiskImageStorageDeviceAttachment"),
                "initWithURL:readOnly:error:",
                o.fileUrl(disk.path),
                disk.readOnly,
                error,
              )));
          }
          const block = init("VZVirtioBlockDeviceConfiguration", "initWithAttachment:", attachment);
          if (disk.identifier !== undefined) {
            o.send("void(id)", block, "setBlockDeviceIdentifier:", o.str(disk.identifier));
          }
          return block;
        });
        o.send("void(id)", cfg, "setStorageDevices:", o.array(disks));

        const serial = config.serialPorts.map((_, i) => {
          const fh = fileHandle(fds.serialPorts[i]!);
          const attachment = init(
            "VZFileHandleSerialPortAttachment",
            "initWithFileHandleForReading:fileHandleForWriting:",
            fh,
            fh,
          );
          const port = make("VZVirtioConsoleDeviceSerialPortConfiguration");
          o.send("void(id)", port, "setAttachment:", attachment);
          return port;
        });
        o.send("void(id)", cfg, "setSerialPorts:", o.array(serial));

        if (config.consolePorts.length > 0) {
          const device = make("VZVirtioConsoleDeviceConfiguration");
          const ports = o.obj("id()", device, "ports");
          config.consolePorts.forEach((spec, i) => {
            const fh = fileHandle(fds.consolePorts[i]!);
            const attachment = init(
              "VZFileHandleSerialPortAttachment",
              "initWithFileHandleForReading:fileHandleForWriting:",
              fh,
              fh,
            );
            const port = make("VZVirtioConsolePortConfiguration");
            o.send("void(id)", port, "setName:", o.str(spec.name));
            o.send("void(id)", port, "setAttachment:", attachment);
            o.send("void(id,u64)", ports, "setObject:atIndexedSubscript:", port, BigInt(i));
          });
          o.send("void(id)", cfg, "setConsoleDevices:", o.array([device]));
        }

        const fsClass = o.cls("VZVirtioFileSystemDeviceConfiguration");
        const shares = config.directoryShares.map((share) => {
          o.check(
            `use share tag ${share.tag}`,
            (error) =>
              o.send("bool(id,buf)", fsClass, "validateTag:error:", o.str(share.tag), error),
          );
          const dir = own(o.obj(
            "id(id,bool)",
            o.alloc("VZSharedDirectory"),
            "initWithURL:readOnly:",
            o.fileUrl(share.path),
            share.readOnly,
          ));
          const single = init("VZSingleDirectoryShare", "initWithDirectory:", dir);
          const device = init(
            "VZVirtioFileSystemDeviceConfiguration",
            "initWithTag:",
            o.str(share.tag),
          );
          o.send("void(id)", device, "setShare:", single);
          return device;
        });
        o.send("void(id)", cfg, "setDirectorySharingDevices:", o.array(shares));

        const nics = config.network.map((net, i) => {
          const fh = fileHandle(fds.network[i]!);
          const attachment = init("VZFileHandleNetworkDeviceAttachment", "initWithFileHandle:", fh);
          o.send("void(i64)", attachment, "setMaximumTransmissionUnit:", BigInt(net.mtu));
          const device = make("VZVirtioNetworkDeviceConfiguration");
          o.send("void(id)", device, "setAttachment:", attachment);
          o.send(
            "void(id)",
            device,
            "setMACAddress:",
            init("VZMACAddress", "initWithString:", o.str(net.mac)),
          );
          return device;
        });
        o.send("void(id)", cfg, "setNetworkDevices:", o.array(nics));

        if (config.entropy) {
          o.send(
            "void(id)",
            cfg,
            "setEntropyDevices:",
            o.array([make("VZVirtioEntropyDeviceConfiguration")]),
          );
        }

        o.check(
          "validate the VM configuration",
          (error) => o.send("bool(buf)", cfg, "validateWithError:", error),
        );
        let saveRestore: true | string = true;
        try {
          o.check(
            "save and restore this VM",
            (error) => o.send("bool(buf)", cfg, "validateSaveRestoreSupportWithError:", error),
          );
        } catch (err) {
          saveRestore = (err as Error).message;
        }
        const machineIdentifier = o.bytes(o.obj("id()", identifier, "dataRepresentation"));

        // The VM copies the configuration; it runs on the main queue.
        const vm = o.obj("id(id)", o.alloc("VZVirtualMachine"), "initWithConfiguration:", cfg);
        const vmDelegate = o.obj("id()", o.obj("id()", classes.vm.cls, "alloc"), "init");
        o.send("void(id)", vm, "setDelegate:", vmDelegate);
        // The NBD delegate must outlive the VM (delegates are weak references): keep it.
        owned.splice(owned.indexOf(delegate), 1);
        const machine = new VzMachine(fw, {
          vm,
          delegate: vmDelegate,
          attachments,
          machineIdentifier,
          saveRestore,
        }, events);
        machine.#nbdDelegate = delegate;
        return machine;
      });
    } catch (err) {
      throw vmError(err);
    } finally {
      for (const p of owned) o.release(p);
    }
  }

  #nbdDelegate: Ptr | undefined;

  /** The state, as last read from the framework. */
  get state(): VzState {
    return this.#state;
  }

  /** Reads the state now. */
  readState(): VzState {
    const n = Number(this.#fw.objc.send("i64()", this.#vm, "state"));
    this.#state = VZ_STATES[n] ?? "error";
    return this.#state;
  }

  /** "Cannot <action>: <NSError's message>" for a delegate's error argument. */
  describe(action: string, error: Deno.PointerValue): string {
    return this.#fw.objc.errorFrom(action, error).message;
  }

  /** @internal From the delegate or the state poll: the machine stopped. */
  stopped(stop: VzStop): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.readState();
    this.#updatePump();
    this.events.onStop(stop);
  }

  #tick(): void {
    this.#fw.runOnce();
    if (this.#closed) return;
    const before = this.#state;
    const now = this.readState();
    // A machine that stopped without a delegate message (e.g. a start that failed).
    if (now !== before && (now === "stopped" || now === "error") && before !== "stopped") {
      this.stopped({
        guest: false,
        ...(now === "error" ? { error: "the VM entered its error state" } : {}),
      });
    }
    this.#updatePump();
  }

  #updatePump(): void {
    if (this.#closed) return;
    this.#pump.set(pumpPolicy(stateCategory(this.#state), this.#pending));
  }

  /** Runs one framework operation whose completion handler settles the promise. */
  #operation(action: string, call: (handler: Ptr) => void): Promise<void> {
    if (this.#closed) return Promise.reject(new VmError("vz_failed", `Cannot ${action}: closed`));
    return new Promise<void>((resolve, reject) => {
      this.#pending++;
      const handler = this.#blocks.completion((error) => {
        this.#pending--;
        this.readState();
        this.#updatePump();
        if (error === null) resolve();
        else reject(vmError(this.#fw.objc.errorFrom(action, error)));
      });
      try {
        this.#fw.objc.withPool(() => call(handler));
      } catch (err) {
        this.#pending--;
        reject(vmError(err));
      }
      this.readState();
      this.#updatePump();
    });
  }

  /** `startWithCompletionHandler:`. */
  start(): Promise<void> {
    return this.#operation("start the VM", (h) => this.#send("startWithCompletionHandler:", h));
  }

  /** `requestStopWithError:`: asks the guest to power off (returns at once). */
  requestStop(): void {
    try {
      this.#fw.objc.check(
        "ask the guest to stop",
        (error) => this.#fw.objc.send("bool(buf)", this.#vm, "requestStopWithError:", error),
      );
    } catch (err) {
      throw vmError(err);
    }
  }

  /** `stopWithCompletionHandler:`: stops at once, like pulling the plug. */
  stop(): Promise<void> {
    return this.#operation("stop the VM", (h) => this.#send("stopWithCompletionHandler:", h));
  }

  /** `pauseWithCompletionHandler:`. */
  pause(): Promise<void> {
    return this.#operation("pause the VM", (h) => this.#send("pauseWithCompletionHandler:", h));
  }

  /** `resumeWithCompletionHandler:`. */
  resume(): Promise<void> {
    return this.#operation("resume the VM", (h) => this.#send("resumeWithCompletionHandler:", h));
  }

  /** `saveMachineStateToURL:completionHandler:` (the machine must be paused). */
  save(path: string): Promise<void> {
    return this.#operation(`save the VM's state to ${path}`, (h) =>
      this.#fw.objc.send(
        "void(id,id)",
        this.#vm,
        "saveMachineStateToURL:completionHandler:",
        this.#fw.objc.fileUrl(path),
        h,
      ));
  }

  /** `restoreMachineStateFromURL:completionHandler:` (a stopped machine; it ends paused). */
  restore(path: string): Promise<void> {
    return this.#operation(`restore the VM's state from ${path}`, (h) =>
      this.#fw.objc.send(
        "void(id,id)",
        this.#vm,
        "restoreMachineStateFromURL:completionHandler:",
        this.#fw.objc.fileUrl(path),
        h,
      ));
  }

  #send(selector: string, handler: Ptr): void {
    this.#fw.objc.send("void(id)", this.#vm, selector, handler);
  }

  /** Releases the machine (stop it first). Blocks stay alive until here. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pump.close();
    byVm.delete(key(this.#vm));
    for (const a of this.#attachments) byAttachment.delete(a);
    const o = this.#fw.objc;
    o.send("void(id)", this.#vm, "setDelegate:", null);
    o.release(this.#vm);
    o.release(this.#delegate);
    if (this.#nbdDelegate) o.release(this.#nbdDelegate);
    this.#blocks.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
