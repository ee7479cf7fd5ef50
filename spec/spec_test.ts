import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { SpecError } from "./errors.ts";
import { parseSpecLayer, resolveSpec, SPEC_DEFAULTS } from "./spec.ts";

Deno.test("resolveSpec - defaults fill what no layer sets", () => {
  const spec = resolveSpec([{}]);
  assertEquals(spec, {
    ...SPEC_DEFAULTS,
    accel: "auto",
    backend: Deno.build.os === "darwin" ? "vz" : "qemu",
    mounts: [],
    ports: [],
    env: {},
  });
});

Deno.test("resolveSpec - the first layer wins; lists concatenate, the last layer's first", () => {
  const flags = { cpus: 4, ports: [{ host: 2, guest: 20 }], env: { A: "flag" } };
  const config = {
    cpus: 1,
    memoryMiB: 512,
    ports: [{ host: 1, guest: 10 }],
    env: { A: "config", B: "config" },
  };
  const spec = resolveSpec([flags, config]);
  assertEquals([spec.cpus, spec.memoryMiB], [4, 512]);
  assertEquals(spec.ports.map((p) => p.host), [1, 2]);
  assertEquals(spec.env, { A: "flag", B: "config" });
});

Deno.test("resolveSpec - a network only when something asks for one", () => {
  assertEquals(resolveSpec([{ network: { allowPrivate: true } }]).network, undefined);
  const secret = { name: "K", value: "0123456789", hosts: ["api.test"] };
  const net = resolveSpec([
    { network: { allowHosts: ["pypi.org"] } },
    { network: { secrets: [secret] } },
  ]).network;
  assertEquals(net?.allowNet, true, "an allow-list implies --allow-net");
  assertEquals(net?.allowHosts, ["pypi.org", "api.test"], "a secret's host joins the list");
  const exposed = resolveSpec([{ network: { exposeHost: [{ guestPort: 80, hostPort: 8080 }] } }]);
  assertEquals(exposed.network?.allowNet, false, "--expose-host alone: a network, no internet");
});

Deno.test("resolveSpec - refuses what cannot describe a sandbox, naming it", () => {
  const bad: Array<[Parameters<typeof resolveSpec>[0], string]> = [
    [[{ ports: [{ host: 1, guest: 1 }, { host: 1, guest: 2 }] }], "host port 1 twice"],
    [[{ cwd: "tmp" }], "absolute guest path"],
    [[{ accel: "hvf" as "kvm" }], "kvm, tcg or auto"],
    [[{ network: { allowHosts: ["bad host!"] } }], "bad host!"],
    [[{ network: { netLog: "/tmp/x" } }], "--net-log without a network"],
    [[{ mounts: [{ host: "/no/such/dir", guest: "/w", readOnly: true }] }], "no such file"],
    [[{
      network: {
        allowNet: true,
        exposeHost: [{ guestPort: 1, hostPort: 2 }, { guestPort: 1, hostPort: 3 }],
      },
    }], "twice"],
  ];
  for (const [layers, message] of bad) {
    const err = assertThrows(() => resolveSpec(layers), message);
    assert(err instanceof SpecError, String(err));
  }
});

Deno.test("parseSpecLayer - checks untrusted JSON field by field, never echoing a value", () => {
  assertEquals(parseSpecLayer({ cpus: 2, network: { allowNet: true } }, "--spec"), {
    cpus: 2,
    network: { allowNet: true },
  });
  assertThrows(() => parseSpecLayer({ cpu: 2 }, "--spec"), 'unknown field "cpu"');
  assertThrows(() => parseSpecLayer({ cpus: "2" }, "--spec"), '"cpus" must be');
  assertThrows(() => parseSpecLayer({ network: { allow: [] } }, "--spec"), '"allow"');
  assertThrows(() => parseSpecLayer([], "--spec"), "JSON object");
  const err = assertThrows(() =>
    parseSpecLayer({ network: { secrets: [{ name: "K", value: 12345678 }] } }, "--spec")
  );
  assert(!err.message.includes("12345678"), err.message);
});

Deno.test("resolveSpec - the VM backend: the host's by default, the first layer's choice, vz only on macOS", () => {
  const host = Deno.build.os === "darwin" ? "vz" : "qemu";
  assertEquals(resolveSpec([{}]).backend, host);
  assertEquals(resolveSpec([{ backend: "qemu" }, { backend: "vz" }]).backend, "qemu");
  if (Deno.build.os !== "darwin") {
    const err = assertThrows(() => resolveSpec([{ backend: "vz" }]), "needs macOS");
    assert(err instanceof SpecError, String(err));
  }
  assertThrows(() => resolveSpec([{ backend: "hvf" as "vz" }]), "use vz or qemu");
});

Deno.test("resolveSpec - --from is a checkpoint name or a registry reference; insecure registries merge", () => {
  assertEquals(resolveSpec([{ from: "py-deps" }]).from, "py-deps");
  const spec = resolveSpec([
    { from: "localhost:5000/team/base:v1", insecureRegistries: ["reg.lan:5000"] },
    { insecureRegistries: ["reg.lan:5000", "other.lan"] },
  ]);
  assertEquals(spec.from, "localhost:5000/team/base:v1");
  assertEquals(spec.insecureRegistries, ["reg.lan:5000", "other.lan"]);
  assertEquals(resolveSpec([{}]).insecureRegistries, undefined);
  assertThrows(() => resolveSpec([{ from: "../x" }]), "Invalid --from");
  assertThrows(() => resolveSpec([{ from: "reg.lan/Upper:tag" }]), "Invalid --from");
});

Deno.test("parseSpecLayer - a secret's inject places and allowHttp are checked", () => {
  const secret = { name: "K", value: "0123456789", hosts: ["api.test"] };
  const ok = {
    network: { secrets: [{ ...secret, inject: ["header", "query"], allowHttp: true }] },
  };
  assertEquals(parseSpecLayer(ok, "spec") as unknown, ok);
  assertThrows(
    () => parseSpecLayer({ network: { secrets: [{ ...secret, inject: ["cookie"] }] } }, "spec"),
    "inject?: [header, query, body]",
  );
  assertThrows(
    () => parseSpecLayer({ network: { secrets: [{ ...secret, allowHttp: "yes" }] } }, "spec"),
    '"secrets" must be',
  );
  assertThrows(() => parseSpecLayer({ backend: "hvf" }, "spec"), '"backend" must be');
  assertThrows(() => parseSpecLayer({ insecureRegistries: "x" }, "spec"), "registry hosts");
});

Deno.test("resolveSpec - one root filesystem: --image, --rootfs or --from; local paths made absolute", () => {
  const cwd = Deno.cwd();
  assertEquals(resolveSpec([{ image: "oci:img:v1" }]).image, `oci:${cwd}/img:v1`);
  assertEquals(resolveSpec([{ image: "oci:/abs/img" }]).image, "oci:/abs/img");
  assertEquals(
    resolveSpec([{ image: "docker-archive:a.tar" }]).image,
    `docker-archive:${cwd}/a.tar`,
  );
  assertEquals(resolveSpec([{ image: "python:3.12-slim" }]).image, "python:3.12-slim");
  const files = resolveSpec([{ kernel: "vmlinux", initrd: "/b/initrd", rootfs: "r.ext4" }]);
  assertEquals(
    [files.kernel, files.initrd, files.rootfs],
    [`${cwd}/vmlinux`, "/b/initrd", `${cwd}/r.ext4`],
  );
  // The first layer's image wins; a flag's --image with the config's --from is two roots.
  assertEquals(resolveSpec([{ image: "a:1" }, { image: "b:1" }]).image, "a:1");
  for (
    const [layers, message] of [
      [[{ image: "a:1" }, { from: "deps" }], "--image and --from together"],
      [[{ rootfs: "/r.ext4", image: "a:1" }], "--image and --rootfs together"],
      [[{ image: "oci:" }], "the path is empty"],
      [[{ image: "http://x/y" }], "not a registry reference"],
    ] as Array<[Parameters<typeof resolveSpec>[0], string]>
  ) {
    const err = assertThrows(() => resolveSpec(layers), message);
    assert(err instanceof SpecError, String(err));
  }
  assertThrows(() => parseSpecLayer({ image: 1 }, "--spec"), '"image" must be');
  assertThrows(() => parseSpecLayer({ kernel: "" }, "--spec"), '"kernel" must be');
});

Deno.test("resolveSpec - --arch: the names people use, normalised; absent unless asked", () => {
  assertEquals(resolveSpec([{}]).arch, undefined);
  assertEquals(resolveSpec([{ arch: "aarch64" as "arm64" }]).arch, "arm64");
  assertEquals(resolveSpec([{ arch: "amd64" as "x86_64" }, { arch: "arm64" }]).arch, "x86_64");
  const err = assertThrows(() => resolveSpec([{ arch: "riscv64" as "arm64" }]), "Invalid --arch");
  assert(err instanceof SpecError, String(err));
  assertEquals(parseSpecLayer({ arch: "arm64" }, "--spec"), { arch: "arm64" });
  assertThrows(() => parseSpecLayer({ arch: "aarch64" }, "--spec"), '"arch" must be');
});
