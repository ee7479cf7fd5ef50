import { assert, assertEquals, assertRejects, assertThrows } from "../tests/_assert.ts";
import { configLayer, loadConfig, validateConfig } from "./config.ts";
import {
  checkMount,
  parseAddHost,
  parseExposeHost,
  parseMountSpec,
  parsePortMapping,
  pick,
} from "./parse.ts";

Deno.test("validateConfig - accepts every documented key", () => {
  const cfg = validateConfig({
    cpus: 2,
    memory: 512,
    disk_size: 4096,
    accel: "tcg",
    backend: "qemu",
    insecure_registries: ["reg.lan:5000"],
    allow_net: true,
    ports: ["8080:80"],
    mounts: ["/tmp:/work:ro"],
    command: ["echo", "hi"],
    network: { allow: ["example.com"], hosts: ["api.test:127.0.0.1"] },
  }, "shuru.json");
  assertEquals(cfg.cpus, 2);
  assertEquals(cfg.network?.allow, ["example.com"]);
});

Deno.test("validateConfig - unknown key is named", () => {
  assertThrows(() => validateConfig({ cpu: 2 }, "shuru.json"), 'unknown key "cpu"');
  assertThrows(() => validateConfig({ network: { alow: [] } }, "x"), "network.alow");
});

Deno.test("validateConfig - wrong types are refused", () => {
  assertThrows(() => validateConfig({ cpus: "2" }, "f"), '"cpus" must be a positive integer');
  assertThrows(() => validateConfig({ cpus: 0 }, "f"), "positive integer");
  assertThrows(() => validateConfig({ command: "ls" }, "f"), "array of strings");
  assertThrows(() => validateConfig({ accel: "hvf" }, "f"), '"kvm", "tcg" or "auto"');
  assertThrows(() => validateConfig({ backend: "hvf" }, "f"), '"vz" or "qemu"');
  assertThrows(() => validateConfig([], "f"), "JSON object");
});

Deno.test("loadConfig - missing optional file is empty, malformed JSON is one clear error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assertEquals(await loadConfig(`${dir}/shuru.json`), {});
    await assertRejects(() => loadConfig(`${dir}/nope.json`, { required: true }), "no such file");
    await Deno.writeTextFile(`${dir}/bad.json`, "{ cpus: 2 ");
    const err = await assertRejects(() => loadConfig(`${dir}/bad.json`), "invalid JSON");
    assert(!err.message.includes("\n"), "one line");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parsePortMapping - valid and invalid", () => {
  assertEquals(parsePortMapping("8080:80"), { host: 8080, guest: 80 });
  assertThrows(() => parsePortMapping("8080"), "expected HOST:GUEST");
  assertThrows(() => parsePortMapping("0:80"), "1-65535");
  assertThrows(() => parsePortMapping("80:x"), "not a port number");
});

Deno.test("parseMountSpec - modes and guest path", () => {
  assertEquals(parseMountSpec("./src:/work"), { host: "./src", guest: "/work", readOnly: true });
  assertEquals(parseMountSpec("a:/w:rw").readOnly, false);
  assertThrows(() => parseMountSpec("a:w"), "must be absolute");
  assertThrows(() => parseMountSpec("a:/w:rx"), 'mode must be "ro" or "rw"');
  assertThrows(() => parseMountSpec("a"), "expected HOST:GUEST");
});

Deno.test("checkMount - host must exist; rw needs allowHostWrites", async () => {
  const dir = await Deno.makeTempDir();
  try {
    checkMount({ host: dir, guest: "/w", readOnly: true }, false);
    assertThrows(
      () => checkMount({ host: `${dir}/x`, guest: "/w", readOnly: true }, false),
      "no such",
    );
    assertThrows(
      () => checkMount({ host: dir, guest: "/w", readOnly: false }, false),
      "--allow-host-writes",
    );
    checkMount({ host: dir, guest: "/w", readOnly: false }, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pick - flag over config over default", () => {
  assertEquals(pick(1, 2, 3), 1);
  assertEquals(pick(undefined, 2, 3), 2);
  assertEquals(pick<number | undefined>(undefined, undefined, 3), 3);
});

Deno.test("parseAddHost takes NAME:IPV4 and refuses anything else", () => {
  assertEquals(parseAddHost("api.test:127.0.0.1"), { name: "api.test", ip: "127.0.0.1" });
  for (const bad of ["api.test", ":127.0.0.1", "api.test:", "api.test:1.2.3", "a:1.2.3.256"]) {
    assertThrows(() => parseAddHost(bad), "expected NAME:IPV4");
  }
});

Deno.test("parseExposeHost takes PORT or PORT:HOSTPORT", () => {
  assertEquals(parseExposeHost("8080"), { guestPort: 8080, hostPort: 8080 });
  assertEquals(parseExposeHost("80:3000"), { guestPort: 80, hostPort: 3000 });
  assertThrows(() => parseExposeHost("0"), "1-65535");
  assertThrows(() => parseExposeHost("1:2:3"), "PORT:HOSTPORT");
  assertThrows(() => parseExposeHost("x"), "not a port number");
});

Deno.test("configLayer - backend and insecure_registries become spec fields", () => {
  const layer = configLayer(
    validateConfig({ backend: "qemu", insecure_registries: ["reg.lan:5000"] }, "shuru.json"),
  );
  assertEquals([layer.backend, layer.insecureRegistries], ["qemu", ["reg.lan:5000"]]);
});

Deno.test("configLayer - image, kernel, initrd and rootfs become spec fields", () => {
  const layer = configLayer(
    validateConfig({
      image: "python:3.12-slim",
      kernel: "./vmlinux",
      initrd: "./initrd.img",
      rootfs: "./root.ext4",
    }, "shuru.json"),
  );
  assertEquals(
    [layer.image, layer.kernel, layer.initrd, layer.rootfs],
    ["python:3.12-slim", "./vmlinux", "./initrd.img", "./root.ext4"],
  );
  assertThrows(() => validateConfig({ image: "" }, "shuru.json"), '"image" must be');
});

Deno.test("configLayer - arch is a spec field (checked by resolveSpec)", () => {
  assertEquals(configLayer(validateConfig({ arch: "arm64" }, "shuru.json")).arch, "arm64");
  assertThrows(() => validateConfig({ arch: 64 }, "shuru.json"), '"arch" must be');
});
