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
import { LineReader } from "./_lines.ts";
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

  /**
   * Runs the shuru CLI in the namespace, trusting the servers' CA (DENO_CERT), with `env` added
   * to its environment.
   */
  async shuru(
    args: string[],
    env: Record<string, string> = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const out = await this.spawn(args, env, "null").output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }

  /** Starts the shuru CLI as {@linkcode shuru} does, without waiting. */
  spawn(
    args: string[],
    env: Record<string, string> = {},
    stdin: "null" | "piped" = "piped",
  ): Deno.ChildProcess {
    const argv = [...this.ns.prefix(), ...shuruCommandLine(), ...args];
    return new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      env: this.home.env({ DENO_CERT: this.servers.caFile, ...env }),
      stdin,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
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

/** What a process shows every reader of /proc of its arguments and environment. */
interface ProcView {
  pid: number;
  cmdline: string;
  environ: string;
}

async function procView(pid: number): Promise<ProcView> {
  return {
    pid,
    cmdline: await Deno.readTextFile(`/proc/${pid}/cmdline`),
    environ: await Deno.readTextFile(`/proc/${pid}/environ`),
  };
}

/** The QEMU processes whose command line names `dir` (the test's data home). */
async function qemuProcesses(dir: string): Promise<ProcView[]> {
  const found: ProcView[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const view = await procView(Number(e.name));
      if (view.cmdline.includes("qemu-system") && view.cmdline.includes(dir)) found.push(view);
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/** Fails naming the process and the file when `value` is in a process's cmdline or environ. */
function assertNotIn(views: ProcView[], value: string, what: string): void {
  for (const v of views) {
    assert(!v.cmdline.includes(value), `${what} ${v.pid}: the value is in /proc/PID/cmdline`);
    assert(!v.environ.includes(value), `${what} ${v.pid}: the value is in /proc/PID/environ`);
  }
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

/** Longest a guest run of these tests may take before it is killed (and the test fails). */
const RUN_DEADLINE_MS = 10 * 60_000;

Deno.test(
  "run --secret: the value goes only into credential headers by default (a body, a query and " +
    "plain HTTP keep the placeholder), opt-ins add the query and body, nothing comes back, and " +
    "QEMU's environment, the net log and the data home never hold it",
  async () => {
    await using world = await SecretWorld.create();
    const { value, home, servers } = world;
    const opt = freshValue();
    const netLog = join(home.dir, "net.jsonl");
    const p = servers.httpsPort;
    const script = [
      `echo "placeholder=$API_KEY"`,
      // The test looks at QEMU's /proc files while the guest waits here.
      `echo ready; read go`,
      `curl -sS https://api.test:${p}/hdr -H "Authorization: Bearer $API_KEY"; echo`,
      `curl -sS -u "git:$API_KEY" https://api.test:${p}/basic; echo`,
      `curl -sS "https://api.test:${p}/json?k=$API_KEY" -H 'content-type: application/json' ` +
      `--data-binary "{\\"key\\":\\"$API_KEY\\"}"; echo`,
      `curl -sS "https://api.test:${p}/opt?k=$OPT_KEY" -H 'content-type: application/json' ` +
      `--data-binary "{\\"key\\":\\"$OPT_KEY\\"}"; echo`,
      `curl -sS http://api.test:${servers.httpPort}/cleartext -H "Authorization: Bearer $API_KEY"`,
      `echo`,
      `curl -sS -D - https://api.test:${p}/leak | sort -u`,
      `curl -sS --compressed "https://api.test:${p}/leak?gzip=1" | sort -u`,
      `curl -sS http://other.test:${servers.httpPort}/plain -H "X-Key: $API_KEY"; echo`,
      `curl -sS -kv https://other.test:${servers.otherHttpsPort}/tls 2>&1 | grep -i 'issuer:'`,
      `curl -sSv https://api.test:${p}/issuer 2>&1 | grep -i 'issuer:'`,
      `python3 -c 'import os, urllib.request as u; print(u.urlopen(u.Request(` +
      `"https://api.test:${p}/py", headers={"X-Key": os.environ["API_KEY"]})).read().decode())'`,
    ].join("\n");
    // API_KEY's value comes from shuru's environment (NAME@HOSTS), so QEMU could inherit it.
    const child = world.spawn([
      "run",
      "-v",
      "--secret",
      "API_KEY@api.test",
      "--secret",
      `OPT_KEY=${opt}@api.test:inject=header,query,body`,
      "--add-host",
      "api.test:127.0.0.1",
      "--add-host",
      "other.test:127.0.0.1",
      "--net-log",
      netLog,
      "--",
      "sh",
      "-c",
      script,
    ], { API_KEY: value });
    const deadline = setTimeout(() => child.kill("SIGKILL"), RUN_DEADLINE_MS);
    const stderr = new Response(child.stderr).text();
    const lines = new LineReader(child.stdout);
    const out: string[] = [];
    let qemu: ProcView[] = [];
    try {
      for (let line; (line = await lines.next()) !== null;) {
        out.push(line);
        if (line !== "ready") continue;
        qemu = await qemuProcesses(home.dir);
        const w = child.stdin.getWriter();
        await w.write(new TextEncoder().encode("go\n"));
        await w.close();
      }
    } finally {
      clearTimeout(deadline);
    }
    const status = await child.status;
    const r = { code: status.code, stdout: out.join("\n"), stderr: await stderr };
    const all = `${r.stdout}\n${r.stderr}`;
    assertEquals(r.code, 0, all);
    // The run's CA and placeholders went into a guest resumed from the ready snapshot.
    assert(r.stderr.includes("shuru: warm start"), all);
    for (const v of [value, opt]) {
      assert(!all.includes(v), `a value reached the guest's output or shuru's stderr:\n${all}`);
    }
    const placeholder = r.stdout.match(/^placeholder=(\S+)$/m)?.[1] ?? "";
    assert(/^sk-[A-Za-z0-9]{22,}$/.test(placeholder), `placeholder: ${placeholder}`);
    assertEquals(qemu.length, 1, "the test found the run's QEMU");
    assertNotIn(qemu, value, "QEMU");

    const got = await servers.received();
    const byPath = (path: string) => got.find((g) => g.path.startsWith(path));
    assertEquals(byPath("/hdr")?.authorization, `Bearer ${value}`, all);
    assertEquals(byPath("/basic")?.authorization, `Basic ${btoa(`git:${value}`)}`);
    const json = byPath("/json")!;
    assertEquals(json.path, `/json?k=${placeholder}`, "the query is opt-in");
    assertEquals(json.body, `{"key":"${placeholder}"}`, "the body is opt-in");
    const opted = byPath("/opt")!;
    assertEquals(opted.path, `/opt?k=${opt}`);
    assertEquals(opted.body, `{"key":"${opt}"}`);
    assertEquals(Number(opted.contentLength), new TextEncoder().encode(opted.body).length);
    assertEquals(byPath("/py")?.xKey, value, "Python (urllib, system trust) reached the host");
    assertEquals(byPath("/plain")?.xKey, placeholder, "another host receives the placeholder");
    assertEquals(byPath("/tls")?.host?.startsWith("other.test"), true, JSON.stringify(got));
    // Plain HTTP to the secret's own host: the placeholder, and one line says why.
    assertEquals(byPath("/cleartext")?.authorization, `Bearer ${placeholder}`);
    const why = r.stderr.split("\n").filter((l) => l.includes("secret API_KEY not sent"));
    assertEquals(why.length, 1, r.stderr);
    assert(/api\.test:\d+: plain HTTP/.test(why[0]!), why[0]);

    // Responses echo the value; the guest sees the placeholder (header, body, gzip body).
    assert(r.stdout.includes(`x-echo: ${placeholder}`), r.stdout);
    assert(r.stdout.split("\n").filter((l) => l === `value=${placeholder}`).length >= 2, r.stdout);
    // TLS to other hosts is not terminated (the guest sees the real issuer); to api.test it is.
    assert(/issuer: .*shuru test upstream CA/.test(r.stdout), r.stdout);
    assert(/issuer: .*shuru run CA/.test(r.stdout), r.stdout);

    assert((await Deno.readTextFile(netLog)).includes("api.test"), "the net log has records");
    for (const v of [value, opt]) {
      assertEquals(await filesContaining(home.dir, v), [], "the data home holds a value");
    }
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
  "start --secret: exec sees the placeholder, the host gets the value, and neither the " +
    "supervisor's nor QEMU's command line or environment, the net log or the data home holds it",
  async () => {
    await using world = await SecretWorld.create();
    const { value, home, servers } = world;
    const netLog = join(home.dir, "net.jsonl");
    // The value comes from shuru start's environment (NAME@HOSTS): the supervisor must not
    // inherit that variable, and gets the value over a pipe instead.
    const start = await world.shuru([
      "start",
      "--name",
      "sec",
      "--net-log",
      netLog,
      ...ARGS(value).with(1, "API_KEY@api.test"),
    ], { API_KEY: value });
    try {
      assertEquals(start.code, 0, start.stderr);
      const ps = await world.shuru(["ps", "--json"]);
      const record = JSON.parse(ps.stdout)[0];
      assert(String(record.network).includes("+secrets API_KEY"), ps.stdout);
      const supervisor = await procView(record.supervisor.pid);
      assertNotIn([supervisor], value, "the supervisor");
      assert(
        !atob(supervisor.cmdline.split("\0").at(-2) ?? "").includes(value),
        "the encoded spec holds the value",
      );
      const qemu = await qemuProcesses(home.dir);
      assertEquals(qemu.length, 1, "the test found the sandbox's QEMU");
      assertNotIn(qemu, value, "QEMU");
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
    assert((await Deno.readTextFile(netLog)).includes("api.test"), "the net log has records");
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
