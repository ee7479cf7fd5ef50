/**
 * `shuru run --secret` end to end: real TCG guests (curl and Python inside) in a black-hole
 * network namespace, whose "real hosts" are the test's HTTPS and HTTP servers on the
 * namespace's 127.0.0.1 (`--add-host`). The shuru process trusts the servers' test CA through
 * DENO_CERT, as a user's machine trusts public CAs; the guest trusts only the run's CA.
 *
 * @module
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { requireTool, shuruCommandLine, TestHome } from "./_shuru.ts";
import { BlackholeNetns } from "./_netns.ts";
import { Store } from "../store/mod.ts";

const SERVER = new URL("./_secret_server.ts", import.meta.url).pathname;

interface Received {
  method: string;
  host: string | null;
  path: string;
  authorization: string | null;
  xKey: string | null;
  body: string;
  contentLength: string | null;
}

/** The test's upstream servers, inside the namespace. */
class SecretServers implements AsyncDisposable {
  private constructor(
    readonly dir: string,
    readonly httpsPort: number,
    readonly httpPort: number,
    readonly otherHttpsPort: number,
    readonly child: Deno.ChildProcess,
  ) {}

  static async start(ns: BlackholeNetns, value: string): Promise<SecretServers> {
    const dir = await Deno.makeTempDir({ prefix: "shuru-secret-servers-" });
    const { child, firstLine } = await ns.startScript(SERVER, [dir, value]);
    const [https, http, other] = (firstLine.match(/^ports (\d+) (\d+) (\d+)$/) ?? [])
      .slice(1).map(Number);
    if (!https || !http || !other) throw new Error(`secret test servers said: ${firstLine}`);
    return new SecretServers(dir, https!, http!, other!, child);
  }

  get caFile(): string {
    return join(this.dir, "ca.pem");
  }

  async received(): Promise<Received[]> {
    const text = await Deno.readTextFile(join(this.dir, "requests.jsonl")).catch(() => "");
    return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* exited */ }
    await this.child.stdout.cancel().catch(() => {});
    await this.child.status;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** One test's world: a fresh value, a data home, a black-hole namespace and the servers. */
class SecretWorld implements AsyncDisposable {
  private constructor(
    readonly value: string,
    readonly home: TestHome,
    readonly ns: BlackholeNetns,
    readonly servers: SecretServers,
  ) {}

  static async create(): Promise<SecretWorld> {
    await requireTool("curl", "curl");
    const value = freshValue();
    const home = await TestHome.create();
    let ns: BlackholeNetns | undefined;
    try {
      ns = await BlackholeNetns.create();
      return new SecretWorld(value, home, ns, await SecretServers.start(ns, value));
    } catch (err) {
      await ns?.[Symbol.asyncDispose]();
      await home[Symbol.asyncDispose]();
      throw err;
    }
  }

  /** Runs the shuru CLI in the namespace, trusting the servers' CA (DENO_CERT). */
  async shuru(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const argv = [...this.ns.prefix(), ...shuruCommandLine(), ...args];
    const out = await new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      env: this.home.env({ DENO_CERT: this.servers.caFile }),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.servers[Symbol.asyncDispose]();
    await this.ns[Symbol.asyncDispose]();
    await this.home[Symbol.asyncDispose]();
  }
}

function freshValue(): string {
  const hex = Array.from(
    crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0"),
  );
  return `sk-test-${hex.join("")}`;
}

/** Every file under `dir` that contains `needle` (the data home must hold no value). */
async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const bytes = new TextEncoder().encode(needle);
  const hits: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile && indexOf(await Deno.readFile(p), bytes) >= 0) hits.push(p);
    }
  };
  await walk(dir);
  return hits;
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  const first = needle[0]!;
  for (
    let i = hay.indexOf(first);
    i >= 0 && i <= hay.length - needle.length;
    i = hay.indexOf(first, i + 1)
  ) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

const ARGS = (value: string) => [
  "--secret",
  `API_KEY=${value}@api.test`,
  "--add-host",
  "api.test:127.0.0.1",
  "--add-host",
  "other.test:127.0.0.1",
];

Deno.test(
  "run --secret: placeholder in the guest, the value reaches its host in a header, Basic " +
    "credentials and a JSON body, never comes back, and a placeholder to another host is unchanged",
  async () => {
    await using world = await SecretWorld.create();
    const { value, home, servers } = world;
    const p = servers.httpsPort;
    const script = [
      `echo "placeholder=$API_KEY"`,
      `curl -sS https://api.test:${p}/hdr -H "Authorization: Bearer $API_KEY"; echo`,
      `curl -sS -u "git:$API_KEY" https://api.test:${p}/basic; echo`,
      `curl -sS https://api.test:${p}/json -H 'content-type: application/json' ` +
      `--data-binary "{\\"key\\":\\"$API_KEY\\"}"; echo`,
      `curl -sS -D - https://api.test:${p}/leak | sort -u`,
      `curl -sS --compressed "https://api.test:${p}/leak?gzip=1" | sort -u`,
      `curl -sS http://other.test:${servers.httpPort}/plain -H "X-Key: $API_KEY"; echo`,
      `curl -sS -kv https://other.test:${servers.otherHttpsPort}/tls 2>&1 | grep -i 'issuer:'`,
      `curl -sSv https://api.test:${p}/issuer 2>&1 | grep -i 'issuer:'`,
      `python3 -c 'import os, urllib.request as u; print(u.urlopen(u.Request(` +
      `"https://api.test:${p}/py", headers={"X-Key": os.environ["API_KEY"]})).read().decode())'`,
    ].join("\n");
    const r = await world.shuru(["run", ...ARGS(value), "--", "sh", "-c", script]);
    const all = `${r.stdout}\n${r.stderr}`;
    assertEquals(r.code, 0, all);
    assert(!all.includes(value), `the value reached the guest's output or shuru's stderr:\n${all}`);
    const placeholder = r.stdout.match(/^placeholder=(\S+)$/m)?.[1] ?? "";
    assert(/^sk-[A-Za-z0-9]{22,}$/.test(placeholder), `placeholder: ${placeholder}`);

    const got = await servers.received();
    const byPath = (path: string) => got.find((g) => g.path.startsWith(path));
    assertEquals(byPath("/hdr")?.authorization, `Bearer ${value}`);
    assertEquals(byPath("/basic")?.authorization, `Basic ${btoa(`git:${value}`)}`);
    const json = byPath("/json")!;
    assertEquals(json.body, `{"key":"${value}"}`);
    assertEquals(Number(json.contentLength), new TextEncoder().encode(json.body).length);
    assertEquals(byPath("/py")?.xKey, value, "Python (urllib, system trust) reached the host");
    assertEquals(byPath("/plain")?.xKey, placeholder, "another host receives the placeholder");
    assertEquals(byPath("/tls")?.host?.startsWith("other.test"), true, JSON.stringify(got));

    // Responses echo the value; the guest sees the placeholder (header, body, gzip body).
    assert(r.stdout.includes(`x-echo: ${placeholder}`), r.stdout);
    assert(r.stdout.split("\n").filter((l) => l === `value=${placeholder}`).length >= 2, r.stdout);
    // TLS to other hosts is not terminated (the guest sees the real issuer); to api.test it is.
    assert(/issuer: .*shuru test upstream CA/.test(r.stdout), r.stdout);
    assert(/issuer: .*shuru run CA/.test(r.stdout), r.stdout);

    assertEquals(await filesContaining(home.dir, value), [], "the data home holds the value");
  },
);

Deno.test(
  "checkpoint create --secret: the saved disk holds neither the value nor the run's CA",
  async () => {
    await using world = await SecretWorld.create();
    const { value, home, servers } = world;
    const script = [
      `curl -sS https://api.test:${servers.httpsPort}/save -H "Authorization: Bearer $API_KEY"`,
      `echo; echo "placeholder=$API_KEY"; echo "$API_KEY" > /root/placeholder.txt`,
      `echo ca-begin; cat /run/shuru/secret-ca.pem; echo ca-end`,
      `grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt`,
      "sync",
    ].join("\n");
    const r = await world.shuru([
      "checkpoint",
      "create",
      "sec1",
      ...ARGS(value),
      "--",
      "sh",
      "-c",
      script,
    ]);
    assertEquals(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assertEquals((await servers.received())[0]?.authorization, `Bearer ${value}`);
    const ca = r.stdout.match(/ca-begin\n([\s\S]*?)ca-end/)?.[1] ?? "";
    assert(ca.includes("BEGIN CERTIFICATE"), r.stdout);
    // Every line of the CA's base64 is searched for: any copy of it would show one.
    const caLines = ca.split("\n").filter((l) => /^[A-Za-z0-9+/=]{40,}$/.test(l));
    assert(caLines.length > 0);

    const store = await Store.open(join(home.dir, "store"));
    const overlayDir = await Deno.makeTempDir({ prefix: "shuru-secret-scan-" });
    try {
      const device = await store.openDevice({ checkpoint: "sec1" }, { overlayDir });
      try {
        const needles = [value, ...caLines].map((n) => new TextEncoder().encode(n));
        const found: string[] = [];
        const placeholder = new TextEncoder().encode(
          r.stdout.match(/^placeholder=(\S+)$/m)?.[1] ?? "missing",
        );
        let placeholderSeen = false;
        const extents = await device.blockStatus!(0, device.size);
        const step = 4 * 1024 * 1024;
        let start = 0;
        for (const e of extents) {
          const end = start + e.length;
          if (!e.zero && !e.hole) {
            // Reads overlap by 128 bytes so a match across a boundary is still seen.
            for (let off = start; off < end; off += step) {
              const bytes = await device.read(off, Math.min(step + 128, end - off));
              needles.forEach((n, i) => {
                if (indexOf(bytes, n) >= 0) found.push(i === 0 ? "the value" : `CA line ${i}`);
              });
              placeholderSeen ||= indexOf(bytes, placeholder) >= 0;
            }
          }
          start = end;
        }
        assertEquals(found, [], "the checkpoint holds secret material");
        assert(placeholderSeen, "the scan saw the guest's own file (it reads the right disk)");
      } finally {
        await device.close();
      }
    } finally {
      await Deno.remove(overlayDir, { recursive: true });
    }

    // Booted from the checkpoint without secrets: the system bundle is the original one.
    const again = await world.shuru([
      "run",
      "--from",
      "sec1",
      "--",
      "sh",
      "-c",
      "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt; ls /run/shuru 2>&1; " +
      'echo "key=${API_KEY:-unset}"',
    ]);
    assertEquals(again.code, 0, again.stderr);
    const during = Number(r.stdout.match(/^(\d+)$/m)?.[1]);
    const after = Number(again.stdout.match(/^(\d+)$/m)?.[1]);
    assertEquals(after, during - 1, `bundle had ${during} certificates with the CA, now ${after}`);
    assert(again.stdout.includes("key=unset"), again.stdout);
  },
);

Deno.test(
  "start --secret: exec sees the placeholder, the host gets the value, and the value is on " +
    "no command line",
  async () => {
    await using world = await SecretWorld.create();
    const { value, home, servers } = world;
    const start = await world.shuru(["start", "--name", "sec", ...ARGS(value)]);
    try {
      assertEquals(start.code, 0, start.stderr);
      const ps = await world.shuru(["ps", "--json"]);
      const record = JSON.parse(ps.stdout)[0];
      assert(String(record.network).includes("+secrets API_KEY"), ps.stdout);
      const cmdline = await Deno.readTextFile(`/proc/${record.supervisor.pid}/cmdline`);
      assert(!cmdline.includes(value), "the supervisor's command line holds the value");
      assert(
        !atob(cmdline.split("\0").at(-2) ?? "").includes(value),
        "the encoded spec holds the value",
      );
      const r = await world.shuru([
        "exec",
        "sec",
        "--",
        "sh",
        "-c",
        `echo "placeholder=$API_KEY"; curl -sS https://api.test:${servers.httpsPort}/exec ` +
        `-H "Authorization: Bearer $API_KEY"`,
      ]);
      assertEquals(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert(!r.stdout.includes(value), r.stdout);
      assert(/^placeholder=sk-[A-Za-z0-9]{22,}$/m.test(r.stdout), r.stdout);
      assertEquals((await servers.received())[0]?.authorization, `Bearer ${value}`);
    } finally {
      await world.shuru(["stop", "sec"]);
    }
    assertEquals(await filesContaining(home.dir, value), [], "the data home holds the value");
  },
);

Deno.test("run --secret with a bad value or host fails before booting, in one line", async () => {
  await using home = await TestHome.create();
  for (
    const [spec, expected] of [
      ["TOKEN=abc@api.test", "shorter than 8"],
      ["TOKEN=abcdefghijk@", "needs hosts"],
      ["UNSET_SHURU_TEST_VAR@api.test", "is not set"],
    ]
  ) {
    const r = await home.run(["run", "--secret", spec!, "--", "true"]);
    assert(r.code !== 0, r.stderr);
    assertEquals(r.stdout, "");
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assert(lines[0]!.startsWith("shuru: ") && lines[0]!.includes(expected!), r.stderr);
  }
});
