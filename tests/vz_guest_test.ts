/**
 * The guest side of the vz backend, for real: the arm64 guest booted under QEMU with the
 * devices Virtualization.framework gives it (tests/_vz_like_qemu.ts: everything on virtio-PCI,
 * the console on `hvc0`, the agent's port found by name on a second console device, disks told
 * apart by serial number, mounts over virtio-fs through virtiofsd, the NIC on a datagram
 * socket to our stack) and the kernel command line `launchGuest` gives a VZ guest.
 *
 * Checked in the guest: the boot markers arrive on hvc0, every virtio device sits on PCI and
 * no virtio-mmio driver was loaded, the NIC got its lease from our stack, a read-write virtio-fs
 * share is written through to the host folder, a read-only one shows the host's files while
 * the guest's writes stay in the guest, and the guest powers off when asked, saying so on hvc0
 * (the kernel's own power-down line never gets there: proto/boot.ts `POWER_OFF_MARKER`).
 *
 * Needs the arm64 guest image (`./shuru init --arch arm64`; run-tests builds it) and QEMU's
 * virtiofsd (qemu-system-common).
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { requireTool } from "./_shuru.ts";
import { VzLikeGuest } from "./_vz_like_qemu.ts";
import { ensureAssets } from "../assets/mod.ts";
import { dataHome } from "../host/mod.ts";
import { INITRAMFS_MARKER } from "../proto/mod.ts";
import { GuestNetwork } from "../runner/mod.ts";
import { BootConsole } from "../vm/mod.ts";

/** An emulated arm64 guest under TCG on a busy 2-core machine. */
const BOOT_MS = 8 * 60_000;

Deno.test("a VZ-like arm64 guest (virtio-PCI, hvc0, virtio-fs, datagram NIC): agent, mounts, network", async () => {
  await requireTool("qemu-system-aarch64", "qemu-system-arm");
  const assets = await ensureAssets({
    assetsDir: Deno.env.get("SHURU_ASSETS") ?? join(dataHome(), "assets"),
    arch: "arm64",
  });
  const dir = await Deno.makeTempDir({ prefix: "shuru-vzlike-" });
  try {
    const rw = join(dir, "rw");
    const ro = join(dir, "ro");
    await Deno.mkdir(rw);
    await Deno.mkdir(ro);
    await Deno.writeTextFile(join(rw, "from-host.txt"), "written on the host\n");
    await Deno.writeTextFile(join(ro, "keep.txt"), "original\n");
    await using network = GuestNetwork.listen(join(dir, "net.sock"), {
      link: "datagram",
      vmSocket: join(dir, "net-vm.sock"),
      onError: () => {},
    });
    const net = network.net;
    await using guest = await VzLikeGuest.boot({
      dir,
      assets,
      shares: [{ tag: "shuru0", hostPath: rw }, { tag: "shuru1", hostPath: ro }],
      net: { socket: net.socket!, vmSocket: net.vmSocket!, mtu: net.mtu! },
    }, BOOT_MS);

    // The command line a VZ guest gets: its console, PCI kept, the PCI and virtio-fs drivers.
    const words = guest.cmdline.split(" ");
    assert(words.includes("console=hvc0"), guest.cmdline);
    assert(!words.includes("pci=off"), guest.cmdline);
    assert(words.includes("shuru.modules=pci,virtiofs,overlay,net"), guest.cmdline);

    const sh = async (script: string) => {
      const out = await guest.agent.exec(["sh", "-c", script]);
      const text = new TextDecoder().decode(out.stdout);
      assertEquals(out.exitCode, 0, `${script}: ${text}${new TextDecoder().decode(out.stderr)}`);
      return text.trim();
    };

    // The markers came over hvc0 (the initramfs reopened it once virtio_console was loaded).
    assert(guest.console.includes(`${INITRAMFS_MARKER} start `), guest.console);
    assert(guest.console.includes(`${INITRAMFS_MARKER} root mounted`), guest.console);
    assertEquals(await sh("cat /proc/consoles | cut -d' ' -f1"), "hvc0");

    // Every virtio device on PCI, no virtio-mmio driver, the port and disks found as on VZ.
    const devices = await sh(
      "for d in /sys/bus/virtio/devices/*; do readlink -f $d; done | grep -c /pci",
    );
    const total = await sh("ls /sys/bus/virtio/devices | wc -l");
    assertEquals(devices, total, "virtio devices not on PCI");
    assert(Number(total) >= 8, `only ${total} virtio devices`);
    assertEquals(
      await sh("[ -d /sys/module/virtio_mmio ] && echo loaded || echo absent"),
      "absent",
    );
    assertEquals(await sh("cat /sys/class/virtio-ports/*/name | grep -c shuru.agent"), "1");
    assertEquals(
      await sh("cat $(readlink -f /sys/block/vda)/serial 2>/dev/null || cat /sys/block/vda/serial"),
      "shuru-root",
    );
    assert((await sh("readlink -f /sys/block/vdb")).includes("/pci"));

    // The NIC on PCI got its lease from our stack over the datagram link.
    assert(guest.console.includes(`${INITRAMFS_MARKER} network `), guest.console);
    const nic = await sh("ls /sys/class/net | grep -v '^lo$' | head -1");
    assert((await sh(`readlink -f /sys/class/net/${nic}`)).includes("/pci"));
    assert((await sh(`ip -4 addr show ${nic}`)).includes("inet 10.0.2."), "no address");

    // virtio-fs shares, mounted by the agent as the host asks (transport virtiofs).
    await guest.agent.mount("shuru0", "/mnt/rw", { mode: "rw", transport: "virtiofs" });
    await guest.agent.mount("shuru1", "/mnt/ro", { mode: "ro", transport: "virtiofs" });
    const mounts = await sh("grep -E ' /mnt/(rw|ro)|/lower ' /proc/mounts | cut -d' ' -f1-3");
    assert(/^shuru0 \/mnt\/rw virtiofs$/m.test(mounts), mounts);
    assert(/^shuru1 \S+\/lower virtiofs$/m.test(mounts), mounts);
    assert(/^overlay \/mnt\/ro overlay$/m.test(mounts), mounts);
    assertEquals(await sh("cat /mnt/rw/from-host.txt"), "written on the host");
    await sh("echo written in the guest > /mnt/rw/from-guest.txt");
    assertEquals(await Deno.readTextFile(join(rw, "from-guest.txt")), "written in the guest\n");
    assertEquals(await sh("cat /mnt/ro/keep.txt"), "original");
    await sh("echo changed > /mnt/ro/keep.txt && touch /mnt/ro/new.txt && cat /mnt/ro/keep.txt");
    assertEquals(await Deno.readTextFile(join(ro, "keep.txt")), "original\n");
    assertEquals(await Deno.stat(join(ro, "new.txt")).then(() => true, () => false), false);

    const status = await guest.shutdown(120_000);
    assertEquals(status.code, 0, `QEMU after the power-off:\n${guest.console.slice(-2000)}`);
    // What a VZ VM's exit is judged by (poweredOff, which checkpoints need): the kernel's own
    // power-down line cannot reach the host over hvc0, shuru's marker does.
    const seen = new BootConsole({ started: 0 });
    seen.push(new TextEncoder().encode(guest.console));
    assert(seen.sawPowerDown, `no power-off on the console:\n${guest.console.slice(-2000)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
