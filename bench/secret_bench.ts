/**
 * `--secret` throughput: the same guest downloads the same blob over HTTPS from a host server
 * on 127.0.0.1, once from a host that carries a secret (TLS ended by shuru, HTTP/1.1 relayed
 * with substitution, TLS again to the server) and once from a host without one (TLS passes
 * through untouched). Runs alternate, A B A B; the ratio terminated / passthrough is printed.
 *
 * Usage: deno run -A bench/secret_bench.ts [MiB] [rounds]   (SHURU_ACCEL defaults to tcg)
 *
 * The server's certificates come from a CA the shuru side trusts through DENO_CERT, which
 * Deno reads at start-up: the bench makes them, then runs itself again with DENO_CERT set.
 *
 * @module
 */

import { join } from "node:path";
import { homeLayout } from "../cli/home.ts";
import { CertificateAuthority } from "../proxy/secret/ca.ts";
import { bootSandbox } from "../runner/mod.ts";
import { parseAccel } from "../vm/mod.ts";
import { median } from "./_stats.ts";

const MIB = Number(Deno.args[0] ?? 64);
const ROUNDS = Number(Deno.args[1] ?? 3);
const DIR_ENV = "SHURU_SECRET_BENCH_DIR";

async function parent(): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-secret-bench-" });
  try {
    const ca = await CertificateAuthority.create({ commonName: "shuru bench upstream CA" });
    await Deno.writeTextFile(join(dir, "ca.pem"), ca.certificatePem);
    for (const name of ["api.test", "other.test"]) {
      const id = await ca.leaf(name);
      await Deno.writeTextFile(join(dir, `${name}.key`), id.keyPem);
      await Deno.writeTextFile(join(dir, `${name}.pem`), id.certPem);
    }
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, ...Deno.args],
      env: { DENO_CERT: join(dir, "ca.pem"), [DIR_ENV]: dir },
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    return code;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function child(dir: string): Promise<void> {
  const blob = crypto.getRandomValues(new Uint8Array(65536));
  const body = new Uint8Array(MIB * 1024 * 1024);
  for (let o = 0; o < body.length; o += blob.length) body.set(blob, o);
  const serve = async (name: string) =>
    Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      key: await Deno.readTextFile(join(dir, `${name}.key`)),
      cert: await Deno.readTextFile(join(dir, `${name}.pem`)),
      onListen: () => {},
    }, () => new Response(body, { headers: { "content-type": "application/octet-stream" } }));
  const api = await serve("api.test");
  const other = await serve("other.test");

  const root = await Deno.makeTempDir({ prefix: "shuru-secret-bench-home-" });
  const shared = homeLayout();
  const booted = await bootSandbox({
    home: {
      root,
      store: join(root, "store"),
      assets: shared.assets,
      instances: join(root, "instances"),
      images: join(root, "images"),
    },
    cpus: 2,
    memoryMiB: 2048,
    diskSizeMiB: 4096,
    accel: parseAccel(Deno.env.get("SHURU_ACCEL") ?? "tcg"),
    network: {
      allowNet: true,
      addHosts: { "api.test": "127.0.0.1", "other.test": "127.0.0.1" },
      secrets: [{ name: "API_KEY", value: "sk-bench-0123456789abcdef", hosts: ["api.test"] }],
    },
  });
  try {
    const download = async (url: string, insecure: boolean): Promise<number> => {
      const out = await booted.sandbox.exec([
        "curl",
        "-sS",
        ...(insecure ? ["-k"] : []),
        "-o",
        "/dev/null",
        "-w",
        "%{time_total} %{size_download}",
        url,
      ]);
      const text = new TextDecoder().decode(out.stdout);
      if (out.exitCode !== 0) {
        throw new Error(`curl ${url}: ${new TextDecoder().decode(out.stderr)}`);
      }
      const [seconds, size] = text.trim().split(" ").map(Number);
      if (size !== body.length) throw new Error(`short download from ${url}: ${size}`);
      return MIB / seconds!;
    };
    const terminated: number[] = [];
    const passthrough: number[] = [];
    await download(`https://api.test:${api.addr.port}/`, false); // warm-up (leaf, caches)
    for (let i = 0; i < ROUNDS; i++) {
      terminated.push(await download(`https://api.test:${api.addr.port}/`, false));
      // The guest does not trust the bench CA: -k, so only the cipher work is compared.
      passthrough.push(await download(`https://other.test:${other.addr.port}/`, true));
    }
    const t = median(terminated);
    const p = median(passthrough);
    console.log(`secret download ${MIB} MiB over HTTPS, ${ROUNDS} rounds A B A B (median MiB/s)`);
    console.log(`  terminated (secret host):    ${t.toFixed(1)} MiB/s  [${fmt(terminated)}]`);
    console.log(`  passthrough (other host):    ${p.toFixed(1)} MiB/s  [${fmt(passthrough)}]`);
    console.log(`  ratio terminated/passthrough: ${(t / p).toFixed(2)}x`);
  } finally {
    await booted[Symbol.asyncDispose]();
    await api.shutdown();
    await other.shutdown();
    await Deno.remove(root, { recursive: true });
  }
}

function fmt(xs: number[]): string {
  return xs.map((x) => x.toFixed(1)).join(", ");
}

const dir = Deno.env.get(DIR_ENV);
if (dir === undefined) Deno.exit(await parent());
await child(dir);
