/**
 * Test helper: boots a minimal Linux guest (Debian's kernel, a busybox initramfs that loads the
 * virtio-net modules and runs a script) in QEMU `microvm` with its NIC on either our stack
 * (`-netdev stream` to a Unix socket the caller serves, or `-netdev dgram` between QEMU's socket
 * and the caller's datagram socket) or QEMU's slirp (`-netdev user`), and collects
 * `RESULT key value` lines from the serial console.
 *
 * Needs qemu-system-x86, linux-image-amd64, busybox-static, cpio and xz-utils.
 *
 * @module
 */

import { sh } from "./_net_tap.ts";
import { LineReader } from "./_lines.ts";

const MODULES = ["virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net"];

/** Explains what the QEMU network tests need when it is missing. */
export async function qemuPrerequisite(): Promise<string | undefined> {
  for (
    const [tool, pkg] of [
      ["qemu-system-x86_64", "qemu-system-x86"],
      ["busybox", "busybox-static"],
      ["cpio", "cpio"],
      ["xz", "xz-utils"],
    ]
  ) {
    const found = await sh(["sh", "-c", `command -v ${tool} || true`]);
    if (!found.trim()) return `QEMU network tests need ${tool}: apt-get install ${pkg}`;
  }
  const kernels = [...Deno.readDirSync("/boot")].filter((e) => e.name.startsWith("vmlinuz-"));
  if (kernels.length === 0) {
    return "QEMU network tests need a kernel: apt-get install linux-image-amd64";
  }
  return undefined;
}

/** The host's TSC rate in kHz (guests under TCG need it to keep time). */
async function tscKhz(): Promise<number> {
  const log = await sh(["dmesg"], { allowFail: true });
  const m = /tsc: Refined TSC clocksource calibration: ([\d.]+) MHz/.exec(log) ??
    /tsc: Detected ([\d.]+) MHz/.exec(log);
  if (m) return Math.round(Number(m[1]) * 1000);
  const cpu = /cpu MHz\s*:\s*([\d.]+)/.exec(await Deno.readTextFile("/proc/cpuinfo"));
  return Math.round(Number(cpu?.[1] ?? "2000") * 1000);
}

/** Kernel and initramfs for a guest, built once into `dir`. */
export interface GuestImage {
  kernel: string;
  initramfs: string;
  release: string;
}

/**
 * Extracts the uncompressed kernel from /boot/vmlinuz-* (the bzImage hangs on microvm; the ELF
 * inside boots via PVH) and builds an initramfs whose /init runs `script` after DHCP.
 * `options.programs` copies host executables (static ones: the guest has no libc) into the
 * initramfs's /bin under the given names.
 */
export async function buildGuest(
  dir: string,
  script: string,
  options: { programs?: Record<string, string> } = {},
): Promise<GuestImage> {
  const release = [...Deno.readDirSync("/lib/modules")].map((e) => e.name).sort().at(-1)!;
  const bz = await Deno.readFile(`/boot/vmlinuz-${release}`);
  const magic = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
  let at = -1;
  for (let i = 0; i < bz.length - 6 && at < 0; i++) {
    if (magic.every((b, k) => bz[i + k] === b)) at = i;
  }
  if (at < 0) throw new Error(`Cannot find the xz stream in /boot/vmlinuz-${release}`);
  await Deno.writeFile(`${dir}/vmlinuz.xz`, bz.subarray(at));
  await sh([
    "sh",
    "-c",
    `xz -dc --single-stream ${dir}/vmlinuz.xz > ${dir}/vmlinux 2>/dev/null || true`,
  ]);
  if ((await Deno.stat(`${dir}/vmlinux`)).size < 1_000_000) {
    throw new Error("Cannot decompress the kernel");
  }

  const root = `${dir}/initramfs`;
  for (const d of ["bin", "lib/modules", "proc", "sys", "dev", "tmp", "etc"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  const busybox = (await sh(["sh", "-c", "command -v busybox"])).trim();
  await Deno.copyFile(busybox, `${root}/bin/busybox`);
  await Deno.chmod(`${root}/bin/busybox`, 0o755);
  for (const [name, hostPath] of Object.entries(options.programs ?? {})) {
    if (!/^[a-z0-9_-]+$/.test(name)) throw new Error(`Cannot use program name "${name}"`);
    await Deno.copyFile(hostPath, `${root}/bin/${name}`);
    await Deno.chmod(`${root}/bin/${name}`, 0o755);
  }
  for (const m of MODULES) {
    const found = (await sh(["find", `/lib/modules/${release}`, "-name", `${m}.ko*`])).trim().split(
      "\n",
    )[0]!;
    if (!found) throw new Error(`Cannot find kernel module ${m}`);
    if (found.endsWith(".xz")) {
      await sh(["sh", "-c", `xz -dc ${found} > ${root}/lib/modules/${m}.ko`]);
    } else await Deno.copyFile(found, `${root}/lib/modules/${m}.ko`);
  }
  await Deno.writeTextFile(
    `${root}/udhcpc.sh`,
    `#!/bin/sh
case "$1" in bound|renew)
  ip addr add "$ip/$mask" dev "$interface"
  [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  ip route add default via "$router" dev "$interface"
  echo "nameserver $dns" > /etc/resolv.conf
  echo "RESULT dhcp $ip/$mask router=$router dns=$dns mtu=$mtu" > /dev/console ;;
esac
`,
  );
  await Deno.writeTextFile(
    `${root}/init`,
    `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in ${MODULES.join(" ")}; do insmod /lib/modules/$m.ko; done
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 1 -s /udhcpc.sh >/dev/null 2>&1 || echo "RESULT dhcp FAILED"
ARG=$(sed -n 's/.*shuru.arg=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
now() { cut -d' ' -f1 /proc/uptime; }
${script}
echo "RESULT done"
poweroff -f
`,
  );
  await Deno.chmod(`${root}/init`, 0o755);
  await Deno.chmod(`${root}/udhcpc.sh`, 0o755);
  await sh(["sh", "-c", `cd ${root} && find . | cpio -o -H newc --quiet > ${dir}/initramfs.img`]);
  return { kernel: `${dir}/vmlinux`, initramfs: `${dir}/initramfs.img`, release };
}

/** How the guest's NIC is attached. */
export type GuestNet =
  | { kind: "stream"; socketPath: string; mtu?: number }
  | { kind: "dgram"; socketPath: string; vmSocketPath: string; mtu?: number }
  | { kind: "slirp" };

/** Boots the guest, returns its RESULT lines (key → rest) and the whole console text. */
export async function runGuest(
  image: GuestImage,
  opts: { net: GuestNet; arg: string; memoryMiB?: number; timeoutMs?: number },
): Promise<{ results: Map<string, string>; console: string }> {
  const net = opts.net;
  const netdev = net.kind === "stream"
    ? `stream,id=n0,server=off,addr.type=unix,addr.path=${net.socketPath}`
    : net.kind === "dgram"
    ? `dgram,id=n0,local.type=unix,local.path=${net.vmSocketPath},` +
      `remote.type=unix,remote.path=${net.socketPath}`
    : "user,id=n0";
  const mtu = net.kind !== "slirp" && net.mtu ? `,host_mtu=${net.mtu}` : "";
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-M",
      "microvm,acpi=on,pit=on",
      "-accel",
      "tcg",
      "-cpu",
      "max",
      "-m",
      String(opts.memoryMiB ?? 512),
      "-smp",
      "1",
      "-nodefaults",
      "-no-user-config",
      "-nographic",
      "-serial",
      "stdio",
      "-no-reboot",
      "-kernel",
      image.kernel,
      "-initrd",
      image.initramfs,
      "-append",
      // tsc=reliable: without it the clocksource can fall back to jiffies (4 ms steps).
      `console=ttyS0 panic=-1 quiet tsc=reliable tsc_early_khz=${await tscKhz()} ` +
      `shuru.arg=${opts.arg}`,
      "-netdev",
      netdev,
      "-device",
      `virtio-net-device,netdev=n0${mtu}`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timeoutMs = opts.timeoutMs ?? 300_000;
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr) +
    (killed ? `\n(guest killed after ${timeoutMs} ms)\n` : "");
  const results = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^RESULT (\S+) ?(.*)$/.exec(line.trim());
    if (m) results.set(m[1]!, m[2]!);
  }
  return { results, console: text };
}

/** A loopback HTTP server in a child process: GET /download (size bytes), POST /upload. */
export async function startServer(
  dir: string,
  size: number,
): Promise<{ port: number; rawPort: number; hash: string; stop: () => Promise<void> }> {
  const file = `${dir}/server.ts`;
  await Deno.writeTextFile(
    file,
    `const size = ${size};
const payload = new Uint8Array(size);
let x = 7;
for (let i = 0; i < size; i++) { x = (x * 1103515245 + 12345) >>> 0; payload[i] = x >>> 24; }
const hex = async (b) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", b)), (v) => v.toString(16).padStart(2, "0")).join("");
const hash = await hex(payload);
// Raw upload port: a 16-digit length, then that many bytes; answers "length hash".
const raw = Deno.listen({ hostname: "127.0.0.1", port: 0 });
(async () => {
  for await (const conn of raw) {
    (async () => {
      const buf = new Uint8Array(1 << 20);
      let head = new Uint8Array(0), body = null, got = 0, want = -1;
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        let chunk = buf.subarray(0, n);
        if (want < 0) {
          const h = new Uint8Array(head.length + n); h.set(head); h.set(chunk, head.length); head = h;
          if (head.length < 16) continue;
          want = Number(new TextDecoder().decode(head.subarray(0, 16)));
          body = new Uint8Array(want);
          chunk = head.subarray(16);
        }
        body.set(chunk.subarray(0, want - got), got);
        got += Math.min(chunk.length, want - got);
        if (got >= want) break;
      }
      await conn.write(new TextEncoder().encode(got + " " + (await hex(body ?? new Uint8Array(0))) + "\\n"));
      conn.close();
    })();
  }
})();
const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(port + " " + raw.addr.port + " " + hash) },
  async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/download") return new Response(payload);
    if (path === "/hello") return new Response("hello from the host\\n");
    const body = new Uint8Array(await req.arrayBuffer());
    return new Response(body.length + " " + (await hex(body)) + "\\n");
  });
await s.finished;
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", file],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = new LineReader(child.stdout);
  const line = await lines.next();
  lines.release();
  if (line === null) throw new Error("test server exited");
  const [port, rawPort, hash] = line.trim().split(" ");
  return {
    port: Number(port),
    rawPort: Number(rawPort),
    hash: hash!,
    stop: async () => {
      child.kill();
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

/** The guest script: DNS, refusals, then download to a file and upload it back (timed). */
export const TRANSFER_SCRIPT = `
# shuru.arg=HOST:HTTPPORT:RAWPORT:MODE; MODE "checks" adds DNS and refusal checks (never under
# slirp: it would forward them to the real network).
HOST=\${ARG%%:*}; REST=\${ARG#*:}; PORT=\${REST%%:*}; REST=\${REST#*:}; RAW=\${REST%%:*}; MODE=\${REST#*:}
echo "RESULT hello $(wget -q -O - http://$HOST:$PORT/hello)"
if [ "$MODE" = checks ]; then
  if nslookup pypi.org >/dev/null 2>&1; then echo "RESULT denied resolved"; else echo "RESULT denied nxdomain"; fi
  t0=$(now); err=$(nc -w 5 10.9.9.9 80 </dev/null 2>&1 >/dev/null); rc=$?; t1=$(now)
  case "$err" in *"Connection refused"*) how=reset ;; *) how=other ;; esac
  echo "RESULT refused rc=$rc $how $t0 $t1"
fi
t0=$(now); wget -q -O /tmp/up http://$HOST:$PORT/download; t1=$(now)
echo "RESULT download $(stat -c %s /tmp/up) $t0 $t1"
t0=$(now); R=$({ printf "%016d" $(stat -c %s /tmp/up); cat /tmp/up; } | nc $HOST $RAW); t1=$(now)
echo "RESULT upload $R $t0 $t1"
`;

/** Seconds between the two guest uptimes at the end of a RESULT value ("... t0 t1"). */
export function guestSeconds(value: string): number {
  const parts = value.trim().split(" ");
  return Number(parts.at(-1)) - Number(parts.at(-2));
}
