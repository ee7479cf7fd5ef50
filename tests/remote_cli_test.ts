/**
 * The registry commands as a user runs them: `shuru login` (docker's config), `checkpoint
 * push/pull --json`, progress on stderr, `checkpoint list` showing the origin, one-line errors,
 * and `nbd serve --from REF` reading lazily (checked with nbdcopy).
 */

import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { FaultyFront, TestRegistry } from "./_registry.ts";
import { nbdUri, pseudoRandom, requireTool, run, ServeProcess } from "./_serve_utils.ts";
import { DEFAULT_READAHEAD, Store } from "../store/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MiB = 1024 * 1024;

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

/** A data home and a docker config folder for one test. */
class Home implements AsyncDisposable {
  readonly dir: string;
  readonly home: string;
  readonly dockerConfig: string;
  private constructor(dir: string) {
    this.dir = dir;
    this.home = join(dir, "home");
    this.dockerConfig = join(dir, "docker");
  }
  static async create(): Promise<Home> {
    return new Home(await Deno.makeTempDir({ prefix: "shuru-remote-cli-" }));
  }
  async shuru(args: string[], stdin?: string): Promise<Out> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", join(ROOT, "main.ts"), ...args],
      env: { SHURU_HOME: this.home, DOCKER_CONFIG: this.dockerConfig },
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(stdin));
      await w.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }
  /** Saves checkpoint `name` in this home's store: `size` bytes of random data. */
  async checkpoint(name: string, size: number): Promise<Uint8Array> {
    const store = await Store.open(join(this.home, "store"), { log: () => {} });
    const base = join(this.dir, `${name}.img`);
    const data = pseudoRandom(size, 3);
    data.fill(7, 0, MiB); // compressible
    await Deno.writeFile(base, data);
    const device = await store.openDevice({ base }, { overlayDir: join(this.dir, `ov-${name}`) });
    try {
      await device.save(name);
    } finally {
      await device.close();
    }
    return data;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

function oneLineError(out: Out, includes: string): void {
  assertEquals(out.code, 1, out.stderr);
  const lines = out.stderr.trim().split("\n").filter((l) => !l.includes("retrying in"));
  assertEquals(lines.length, 1, out.stderr);
  assert(lines[0]!.startsWith("shuru: Cannot "), out.stderr);
  assert(lines[0]!.includes(includes), `expected "${includes}" in: ${out.stderr}`);
}

Deno.test("shuru login, checkpoint push/pull --json and list: as a user runs them", async () => {
  await using h = await Home.create();
  await using reg = await TestRegistry.start({
    auth: { kind: "htpasswd", users: [{ name: "alice", password: "s3cret" }] },
  });
  const data = await h.checkpoint("env", 6 * MiB);
  const ref = reg.ref("team/env:v1");
  // Without credentials: one line that says how to fix it.
  oneLineError(await h.shuru(["checkpoint", "push", "env", ref]), "shuru login");
  const bad = await h.shuru(["login", reg.host, "-u", "alice", "--password-stdin"], "nope\n");
  oneLineError(bad, "401");
  const login = await h.shuru(["login", reg.host, "-u", "alice", "--password-stdin"], "s3cret\n");
  assertEquals(login.code, 0, login.stderr);
  assert(login.stdout.includes("Login succeeded"), login.stdout);
  const cfg = JSON.parse(await Deno.readTextFile(join(h.dockerConfig, "config.json")));
  assertEquals(
    cfg.auths[reg.host].auth,
    new TextEncoder().encode("alice:s3cret").toBase64(),
  );

  const push = await h.shuru(["checkpoint", "push", "env", ref, "--json"]);
  assertEquals(push.code, 0, push.stderr);
  const pushed = JSON.parse(push.stdout);
  assert(/^sha256:[0-9a-f]{64}$/.test(pushed.digest), push.stdout);
  // 96 blocks, the first 16 identical: 81 distinct chunks.
  assertEquals(pushed.newChunks, 81);
  // Progress on stderr: chunks, bytes, rate.
  assert(/81\/81 chunks, 5\.1 MiB\/5\.1 MiB, .* on the wire, .*\/s/.test(push.stderr), push.stderr);

  const pull = await h.shuru(["checkpoint", "pull", ref, "copy", "--json"]);
  assertEquals(pull.code, 0, pull.stderr);
  const pulled = JSON.parse(pull.stdout);
  assertEquals([pulled.name, pulled.digest, pulled.fetchedChunks], ["copy", pushed.digest, 0]);
  const list = JSON.parse((await h.shuru(["checkpoint", "list", "--json"])).stdout);
  assertEquals(list.find((c: { name: string }) => c.name === "copy").origin, {
    ref,
    digest: pushed.digest,
  });
  const text = await h.shuru(["checkpoint", "list"]);
  assert(/ORIGIN/.test(text.stdout) && text.stdout.includes(`${ref}@sha256:`), text.stdout);

  // Another machine pulls it all; bytes identical when served over NBD.
  await using h2 = await Home.create();
  await Deno.mkdir(h2.dockerConfig, { recursive: true });
  await Deno.copyFile(join(h.dockerConfig, "config.json"), join(h2.dockerConfig, "config.json"));
  const pull2 = await h2.shuru(["checkpoint", "pull", ref]);
  assertEquals(pull2.code, 0, pull2.stderr);
  assert(pull2.stdout.includes("as checkpoint env: 81 chunks fetched"), pull2.stdout);
  await requireTool("nbdcopy");
  const srv = await ServeProcess.start(h2.home, join(h2.dir, "s.sock"), [
    "--from",
    "env",
    "--read-only",
  ]);
  try {
    const dest = join(h2.dir, "out.img");
    const cp = await run("nbdcopy", [srv.uri(), dest]);
    assertEquals(cp.code, 0, cp.stderr);
    assert(sameAs(await Deno.readFile(dest), data));
  } finally {
    await srv.stop();
  }
});

function sameAs(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("nbd serve --from REF reads lazily: a small read fetches little; errors are one line", async () => {
  await using h = await Home.create();
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  const data = await h.checkpoint("env", 8 * MiB);
  const push = await h.shuru(["checkpoint", "push", "env", reg.ref("lazy/env:1")]);
  assertEquals(push.code, 0, push.stderr);
  await using h2 = await Home.create();
  await requireTool("qemu-io");
  const srv = await ServeProcess.start(h2.home, join(h2.dir, "s.sock"), [
    "--from",
    `${front.host}/lazy/env:1`,
    "--read-only",
  ]);
  try {
    front.resetCounters();
    const io = await run("qemu-io", [
      "-f",
      "raw",
      "-r",
      "-c",
      `read -v ${4 * MiB} 512`,
      nbdUri(srv.socket),
    ]);
    assertEquals(io.code, 0, io.stderr);
    // The 512 bytes read are the checkpoint's.
    const first = io.stdout.split("\n")[0]!.split(":")[1]!.trim().split(" ").slice(0, 4);
    assertEquals(first.map((x) => parseInt(x, 16)), [...data.subarray(4 * MiB, 4 * MiB + 4)]);
    // The chunk asked for and its readahead, nothing more.
    const most = (DEFAULT_READAHEAD + 1) * 65536;
    assert(front.blobBytes > 0 && front.blobBytes <= most, String(front.blobBytes));
  } finally {
    await srv.stop();
  }
  // Bad references and registries: one line each.
  oneLineError(await h2.shuru(["checkpoint", "pull", `${reg.host}/lazy/env:nope`]), "404");
  oneLineError(await h2.shuru(["checkpoint", "pull", "localhost:5000/UPPER"]), "repository");
  front.rules = [{ match: () => true, action: { kind: "status", status: 503 } }];
  oneLineError(await h2.shuru(["checkpoint", "pull", `${front.host}/lazy/env:1`]), "503");
  front.rules = [];
  assertEquals((await h2.shuru(["checkpoint", "list", "--json"])).stdout.trim(), "[]");
});
