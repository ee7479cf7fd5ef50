/**
 * The guest's network interface after a resume (the `net_config` request). A cold boot gets its
 * address by DHCP in the initramfs when the VM has a NIC at all; a guest resumed from a ready
 * snapshot always has one (the snapshot cannot know whether the run wants a network), so the
 * host says here whether it is up, with the address, default route and MTU of shuru's own stack,
 * or down (a run without `--allow-net`: no route anywhere, as without a NIC). Done with ioctls
 * through FFI, so it needs no program in the guest's root filesystem.
 *
 * @module
 */

import { libc } from "../ffi/mod.ts";
import { AgentError, type NetConfigRequest } from "../proto/mod.ts";

/** The guest's first network interface other than `lo` (sorted by name), or undefined. */
export function firstInterface(sysRoot = "/sys/class/net"): string | undefined {
  let names: string[];
  try {
    names = [...Deno.readDirSync(sysRoot)].map((e) => e.name).filter((n) => n !== "lo").sort();
  } catch {
    return undefined;
  }
  return names[0];
}

/** Applies `req` to the first interface; see the module doc. */
export function applyNetConfig(req: NetConfigRequest): void {
  const name = firstInterface();
  if (name === undefined) {
    if (!req.up) return;
    throw new AgentError("not_found", "Cannot configure the network: the guest has no NIC");
  }
  try {
    if (!req.up) {
      libc.setInterfaceUp(name, false);
      return;
    }
    if (req.mtu !== undefined) libc.setInterfaceMtu(name, req.mtu);
    if (req.address !== undefined) libc.setInterfaceAddress(name, req.address, req.prefix ?? 24);
    libc.setInterfaceUp(name, true);
    if (req.gateway !== undefined) libc.addDefaultRoute(req.gateway);
  } catch (e) {
    const code = e instanceof libc.LibcError && e.errno === libc.ERRNO.EPERM
      ? "permission_denied"
      : "io";
    throw new AgentError(code, `Cannot configure ${name}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}
