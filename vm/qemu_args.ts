/**
 * Builds the QEMU command line for a {@linkcode VmConfig}: a pure function, unit-tested.
 *
 * The machine (`microvm` for x86_64, `virt` for arm64), CPU model and device names come from the
 * guest architecture's {@linkcode Machine} (`machine.ts`); the devices are the same for all.
 *
 * @module
 */

import { ROOT_SERIAL, TOOLS_SERIAL } from "../proto/mod.ts";
import { VmError } from "./errors.ts";
import { deviceModel, machineFor } from "./machine.ts";
import type { VmConfig } from "./types.ts";

/** The virtio-serial port name the guest agent looks for. */
export const AGENT_PORT_NAME = "shuru.agent";

const TAG_RE = /^[A-Za-z0-9_.-]{1,31}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Escapes a value for a QEMU `-opt key=value,...` list: commas are doubled. */
export function optValue(value: string): string {
  return value.replaceAll(",", ",,");
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new VmError("invalid_config", `Cannot configure the VM: ${message}`);
}

/** The id of the RAM backend object when guest RAM is in a file (its RAM block's name). */
export const RAM_BACKEND_ID = "shuru.ram";

/** Options of {@linkcode qemuArgs}. */
export interface QemuArgsOptions {
  /**
   * Start paused, waiting for a machine state to be loaded over the monitor
   * (`-incoming defer`, then `migrate-incoming`): how a snapshot is restored.
   */
  incoming?: boolean;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Returns QEMU's arguments (without the program name) for `config`. */
export function qemuArgs(config: VmConfig, options: QemuArgsOptions = {}): string[] {
  check(
    Number.isInteger(config.cpus) && config.cpus >= 1 && config.cpus <= 64,
    `cpus must be 1-64, got ${config.cpus}`,
  );
  check(
    Number.isInteger(config.memoryMiB) && config.memoryMiB >= 128 &&
      config.memoryMiB <= 1024 * 1024,
    `memory must be 128 MiB or more, got ${config.memoryMiB}`,
  );
  check(!config.cmdline.includes("\n"), "the kernel command line has a newline");
  if (config.memory) {
    check(config.memory.path.startsWith("/"), `RAM file ${config.memory.path} is not absolute`);
  }
  check(
    config.vmGenerationId === undefined || UUID_RE.test(config.vmGenerationId),
    `VM generation ID ${config.vmGenerationId} is not a UUID`,
  );
  const machine = machineFor(config.arch);
  const args = [
    "-M",
    machine.machine + (config.memory ? `,memory-backend=${RAM_BACKEND_ID}` : ""),
    "-accel",
    config.accel,
    "-cpu",
    machine.cpu(config.accel),
    "-smp",
    String(config.cpus),
    "-m",
    `${config.memoryMiB}M`,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-kernel",
    config.kernel,
    "-initrd",
    config.initrd,
    "-append",
    config.cmdline,
    // Serial console on QEMU's stdio; signal=off: Ctrl-C reaches the guest in console mode.
    "-chardev",
    "stdio,id=console,signal=off",
    "-serial",
    "chardev:console",
  ];
  if (config.memory) {
    // share=off maps the file MAP_PRIVATE: the guest's writes never reach it.
    args.push(
      "-object",
      `memory-backend-file,id=${RAM_BACKEND_ID},size=${config.memoryMiB}M,` +
        `mem-path=${optValue(config.memory.path)},share=${config.memory.shared ? "on" : "off"}`,
    );
  }
  if (config.controlSocket !== undefined) {
    // Like the agent channel: we listen, QEMU connects while starting up.
    args.push(
      "-global",
      "migration.send-configuration=off",
      "-chardev",
      `socket,id=monitor,path=${optValue(config.controlSocket)},server=off`,
      "-mon",
      "chardev=monitor,mode=control",
    );
  }
  if (config.vmGenerationId !== undefined) {
    args.push("-device", `vmgenid,guid=${config.vmGenerationId}`);
  }
  // -S: stay paused once the state is loaded (the caller resumes when the host side is ready).
  if (options.incoming) args.push("-S", "-incoming", "defer");

  const disk = config.disk;
  if (disk === undefined) {
    // No root disk: only the KVM probe boot, which stops in the initramfs.
  } else if (disk.kind === "nbd") {
    args.push(
      "-drive",
      [
        "driver=nbd",
        "server.type=unix",
        `server.path=${optValue(disk.socket)}`,
        `export=${optValue(disk.exportName)}`,
        "if=none",
        "id=root",
        "cache=none",
        "discard=unmap",
        `read-only=${disk.readOnly ? "on" : "off"}`,
      ].join(","),
    );
  } else {
    args.push(
      "-drive",
      [
        `file=${optValue(disk.path)}`,
        `format=${disk.format ?? "raw"}`,
        "if=none",
        "id=root",
        "cache=unsafe",
        "discard=unmap",
        `read-only=${disk.readOnly ? "on" : "off"}`,
      ].join(","),
    );
  }
  if (disk) args.push("-device", `${deviceModel(machine, "blk")},drive=root,serial=${ROOT_SERIAL}`);
  if (config.tools !== undefined) {
    check(config.tools.startsWith("/"), `tools disk ${config.tools} is not an absolute path`);
    args.push(
      "-drive",
      `file=${optValue(config.tools)},format=raw,if=none,id=tools,read-only=on,cache=none`,
      "-device",
      `${deviceModel(machine, "blk")},drive=tools,serial=${TOOLS_SERIAL}`,
    );
  }

  // Agent channel. Without a monitor, we listen and QEMU connects at startup (server=off):
  // no polling for QEMU's socket to appear. With a monitor, QEMU listens (server=on,wait=off)
  // and we connect once it has greeted, so the host side can hang up and come back: the guest
  // sees the port close and reopen, which is how a session ends before a snapshot and how a
  // restored guest meets its new host. The guest agent sends nothing before the host's bytes,
  // so nothing it writes can be lost while no host is attached.
  const agentServer = config.controlSocket !== undefined ? "on,wait=off" : "off";
  args.push(
    "-device",
    `${deviceModel(machine, "serial")},max_ports=2`,
    "-chardev",
    `socket,id=agent,path=${optValue(config.agentSocket)},server=${agentServer}`,
    "-device",
    `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
  );

  const tags = new Set<string>();
  (config.mounts ?? []).forEach((mount, i) => {
    check(
      TAG_RE.test(mount.tag),
      `mount tag ${JSON.stringify(mount.tag)} must be 1-31 of A-Z a-z 0-9 _ . -`,
    );
    check(!tags.has(mount.tag), `mount tag ${mount.tag} is used twice`);
    check(mount.hostPath.startsWith("/"), `mount host path ${mount.hostPath} is not absolute`);
    tags.add(mount.tag);
    args.push(
      "-fsdev",
      `local,id=fs${i},path=${optValue(mount.hostPath)},security_model=mapped-xattr` +
        (mount.readOnly ? ",readonly=on" : ""),
      "-device",
      `${deviceModel(machine, "9p")},fsdev=fs${i},mount_tag=${mount.tag}`,
    );
  });

  if (config.net) {
    const net = config.net;
    check(net.mac === undefined || MAC_RE.test(net.mac), `MAC address ${net.mac} is malformed`);
    check(
      net.mtu === undefined || (Number.isInteger(net.mtu) && net.mtu >= 576 && net.mtu <= 65520),
      `MTU must be 576-65520, got ${net.mtu}`,
    );
    check(
      net.transport !== "pair" && net.socket !== undefined,
      "QEMU takes the network on a socket path (stream or dgram), not a socket pair",
    );
    let netdev: string;
    if (net.transport === "dgram") {
      check(net.vmSocket !== undefined, "a datagram network needs the VM's socket path");
      // QEMU binds its end and sends every frame as one datagram to ours.
      netdev = `dgram,id=net0,local.type=unix,local.path=${optValue(net.vmSocket!)},` +
        `remote.type=unix,remote.path=${optValue(net.socket!)}`;
    } else {
      netdev = `stream,id=net0,server=off,addr.type=unix,addr.path=${optValue(net.socket!)}`;
    }
    args.push(
      "-netdev",
      netdev,
      "-device",
      `${deviceModel(machine, "net")},netdev=net0` + (net.mac ? `,mac=${net.mac}` : "") +
        (net.mtu ? `,host_mtu=${net.mtu}` : ""),
    );
  }
  return args;
}
