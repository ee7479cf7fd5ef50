import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { VmError } from "./errors.ts";
import { optValue, qemuArgs } from "./qemu_args.ts";
import type { VmConfig } from "./types.ts";

const base: VmConfig = {
  kernel: "/a/vmlinux",
  initrd: "/a/initramfs.img",
  cmdline: "console=ttyS0 quiet",
  cpus: 2,
  memoryMiB: 1024,
  accel: "tcg",
  disk: { kind: "nbd", socket: "/i/nbd.sock", exportName: "root" },
  agentSocket: "/i/agent.sock",
  consoleLog: "/i/console.log",
};

/** Returns the value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

Deno.test("qemuArgs: microvm with PVH kernel, no defaults, console on stdio", () => {
  const args = qemuArgs(base);
  assertEquals(values(args, "-M"), ["microvm,acpi=on,pit=on"]);
  assertEquals(values(args, "-accel"), ["tcg"]);
  assertEquals(values(args, "-cpu"), ["max"]);
  assertEquals(values(args, "-smp"), ["2"]);
  assertEquals(values(args, "-m"), ["1024M"]);
  assertEquals(values(args, "-kernel"), ["/a/vmlinux"]);
  assertEquals(values(args, "-initrd"), ["/a/initramfs.img"]);
  assertEquals(values(args, "-append"), ["console=ttyS0 quiet"]);
  for (const flag of ["-nodefaults", "-no-user-config", "-no-reboot"]) {
    assert(args.includes(flag), flag);
  }
  assertEquals(values(args, "-serial"), ["chardev:console"]);
  assert(values(args, "-chardev").includes("stdio,id=console,signal=off"));
  assertEquals(values(qemuArgs({ ...base, accel: "kvm" }), "-cpu"), ["host"]);
});

Deno.test("qemuArgs: NBD root disk on virtio-blk, agent port where QEMU connects to us", () => {
  const args = qemuArgs(base);
  assertEquals(values(args, "-drive"), [
    "driver=nbd,server.type=unix,server.path=/i/nbd.sock,export=root,if=none,id=root," +
    "cache=none,discard=unmap,read-only=off",
  ]);
  const devices = values(args, "-device");
  assert(devices.includes("virtio-blk-device,drive=root,serial=shuru-root"));
  assert(devices.includes("virtio-serial-device,max_ports=2"));
  assert(devices.includes("virtserialport,chardev=agent,name=shuru.agent"));
  assert(values(args, "-chardev").includes("socket,id=agent,path=/i/agent.sock,server=off"));
  assertEquals(values(args, "-netdev"), []);
  assertEquals(values(args, "-fsdev"), []);
});

Deno.test("qemuArgs: file disk, 9p mounts, network stream", () => {
  const args = qemuArgs({
    ...base,
    disk: { kind: "file", path: "/d/over,lay.qcow2", format: "qcow2", readOnly: true },
    mounts: [
      { tag: "src", hostPath: "/home/me/src", readOnly: true },
      { tag: "out", hostPath: "/tmp/out", readOnly: false },
    ],
    net: { socket: "/i/net.sock", mac: "02:00:00:00:00:01", mtu: 65520 },
  });
  assertEquals(values(args, "-drive"), [
    "file=/d/over,,lay.qcow2,format=qcow2,if=none,id=root,cache=unsafe,discard=unmap,read-only=on",
  ]);
  assertEquals(values(args, "-fsdev"), [
    "local,id=fs0,path=/home/me/src,security_model=mapped-xattr,readonly=on",
    "local,id=fs1,path=/tmp/out,security_model=mapped-xattr",
  ]);
  const devices = values(args, "-device");
  assert(devices.includes("virtio-9p-device,fsdev=fs0,mount_tag=src"));
  assert(devices.includes("virtio-9p-device,fsdev=fs1,mount_tag=out"));
  assertEquals(values(args, "-netdev"), [
    "stream,id=net0,server=off,addr.type=unix,addr.path=/i/net.sock",
  ]);
  assert(devices.includes("virtio-net-device,netdev=net0,mac=02:00:00:00:00:01,host_mtu=65520"));
});

Deno.test("qemuArgs: no disk for the probe boot", () => {
  const args = qemuArgs({ ...base, disk: undefined });
  assertEquals(values(args, "-drive"), []);
  assert(!values(args, "-device").includes("virtio-blk-device,drive=root,serial=shuru-root"));
});

Deno.test("qemuArgs rejects bad values with a message naming them", () => {
  const bad: Array<[Partial<VmConfig>, string]> = [
    [{ cpus: 0 }, "cpus"],
    [{ cpus: 1.5 }, "cpus"],
    [{ memoryMiB: 64 }, "memory"],
    [{ cmdline: "a\nb" }, "newline"],
    [{ mounts: [{ tag: "bad tag", hostPath: "/x", readOnly: true }] }, "mount tag"],
    [{ mounts: [{ tag: "a,b", hostPath: "/x", readOnly: true }] }, "mount tag"],
    [{ mounts: [{ tag: "t", hostPath: "rel", readOnly: true }] }, "not absolute"],
    [{
      mounts: [{ tag: "t", hostPath: "/x", readOnly: true }, {
        tag: "t",
        hostPath: "/y",
        readOnly: true,
      }],
    }, "twice"],
    [{ net: { socket: "/n", mac: "zz" } }, "MAC"],
    [{ net: { socket: "/n", mtu: 100 } }, "MTU"],
    [{ net: { transport: "pair", fd: 5 } }, "not a socket pair"],
  ];
  for (const [patch, words] of bad) {
    const err = assertThrows(() => qemuArgs({ ...base, ...patch }), words);
    assert(err instanceof VmError && err.code === "invalid_config");
  }
});

Deno.test("optValue doubles commas", () => {
  assertEquals(optValue("/a,b,,c"), "/a,,b,,,,c");
});

Deno.test("QEMU accepts the generated device and drive options", async () => {
  // A real QEMU parses the whole argv; -S stops before the guest runs, `quit` ends it.
  const dir = await Deno.makeTempDir();
  try {
    const disk = `${dir}/disk.img`;
    await Deno.writeFile(disk, new Uint8Array(1024 * 1024));
    const kernel = `${dir}/k`;
    await Deno.writeFile(kernel, new Uint8Array(16));
    const args = qemuArgs({
      ...base,
      kernel,
      initrd: kernel,
      disk: { kind: "file", path: disk },
      mounts: [{ tag: "m", hostPath: dir, readOnly: true }],
      agentSocket: `${dir}/agent.sock`,
    }).filter((a) =>
      a !== "-kernel" && a !== kernel && a !== "-initrd" && a !== "-append" && a !== base.cmdline
    );
    // QEMU connects to the agent socket only after parsing every option and creating devices.
    const listener = Deno.listen({ transport: "unix", path: `${dir}/agent.sock` });
    const child = new Deno.Command("qemu-system-x86_64", {
      args: [...args, "-S"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const accepted = listener.accept();
    const first = await Promise.race([
      accepted.then(() => "connected"),
      child.status.then(() => "exited"),
    ]);
    if (first === "connected") child.kill("SIGKILL");
    const result = await child.output();
    listener.close();
    (await accepted.catch(() => undefined))?.close();
    const stderr = new TextDecoder().decode(result.stderr);
    assertEquals(
      first,
      "connected",
      `QEMU rejected the argv (apt-get install qemu-system-x86): ${stderr}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qemuArgs: RAM in a file, shared or private, as the machine's memory backend", () => {
  const shared = qemuArgs({ ...base, memory: { path: "/i/r,am", shared: true } });
  assertEquals(values(shared, "-M"), ["microvm,acpi=on,pit=on,memory-backend=shuru.ram"]);
  assertEquals(values(shared, "-object"), [
    "memory-backend-file,id=shuru.ram,size=1024M,mem-path=/i/r,,am,share=on",
  ]);
  const priv = qemuArgs({ ...base, memory: { path: "/i/ram", shared: false } });
  assertEquals(values(priv, "-object"), [
    "memory-backend-file,id=shuru.ram,size=1024M,mem-path=/i/ram,share=off",
  ]);
  assertEquals(values(qemuArgs(base), "-object"), []);
  assertThrows(() => qemuArgs({ ...base, memory: { path: "ram", shared: true } }), "absolute");
});

Deno.test("qemuArgs: a monitor makes QEMU listen on the agent socket; incoming starts paused", () => {
  const args = qemuArgs({ ...base, controlSocket: "/i/qmp.sock" }, { incoming: true });
  const chardevs = values(args, "-chardev");
  assert(chardevs.includes("socket,id=monitor,path=/i/qmp.sock,server=off"), String(chardevs));
  assert(chardevs.includes("socket,id=agent,path=/i/agent.sock,server=on,wait=off"));
  assertEquals(values(args, "-mon"), ["chardev=monitor,mode=control"]);
  // The machine state is saved without RAM and without the configuration section.
  assertEquals(values(args, "-global"), ["migration.send-configuration=off"]);
  assert(args.includes("-S"));
  assertEquals(values(args, "-incoming"), ["defer"]);
  const plain = qemuArgs(base);
  assertEquals(values(plain, "-incoming"), []);
  assert(!plain.includes("-S"));
});

Deno.test("qemuArgs: a VM generation ID device when asked, checked as a UUID", () => {
  const id = "0f8fad5b-d9cb-469f-a165-70867728950e";
  assert(
    values(qemuArgs({ ...base, vmGenerationId: id }), "-device").includes(`vmgenid,guid=${id}`),
  );
  assert(!values(qemuArgs(base), "-device").some((d) => d.startsWith("vmgenid")));
  assertThrows(() => qemuArgs({ ...base, vmGenerationId: "nope" }), "not a UUID");
});

Deno.test("qemuArgs: the tools disk is a read-only raw drive the guest finds by its serial", () => {
  const args = qemuArgs({ ...base, tools: "/a/tools.ext4" });
  assert(
    values(args, "-drive").includes(
      "file=/a/tools.ext4,format=raw,if=none,id=tools,read-only=on,cache=none",
    ),
  );
  assert(values(args, "-device").includes("virtio-blk-device,drive=tools,serial=shuru-tools"));
  let err: unknown;
  try {
    qemuArgs({ ...base, tools: "relative.ext4" });
  } catch (e) {
    err = e;
  }
  assert(err instanceof Error && /not an absolute path/.test(err.message));
});
