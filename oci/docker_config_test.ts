import { assertEquals, assertRejects } from "../tests/assert.ts";
import { lookupCredentials, storeCredentials } from "./docker_config.ts";
import { RegistryError } from "./errors.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-dockercfg-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const b64 = (s: string) => new TextEncoder().encode(s).toBase64();

Deno.test("lookupCredentials - auths by host, Docker Hub's URL key, none", async () => {
  await withDir(async (dir) => {
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        auths: {
          "localhost:5000": { auth: b64("alice:s3:cret") },
          "https://index.docker.io/v1/": { auth: b64("hub:pw") },
          "http://reg.example:8443/v2/": { auth: b64("bob:pw2") },
          "tok.example": { auth: b64("x:"), identitytoken: "refresh-me" },
        },
      }),
    );
    assertEquals(await lookupCredentials("localhost:5000", { configPath }), {
      kind: "basic",
      username: "alice",
      password: "s3:cret",
    });
    assertEquals((await lookupCredentials("docker.io", { configPath }))?.username, "hub");
    assertEquals((await lookupCredentials("reg.example:8443", { configPath }))?.username, "bob");
    assertEquals(await lookupCredentials("tok.example", { configPath }), {
      kind: "identity_token",
      username: "x",
      token: "refresh-me",
    });
    assertEquals(await lookupCredentials("other:1", { configPath }), null);
    assertEquals(await lookupCredentials("x", { configPath: `${dir}/missing.json` }), null);
  });
});

Deno.test("lookupCredentials - a malformed config is one clear error", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, "{not json");
    const err = await assertRejects(
      () => lookupCredentials("x:1", { configPath: `${dir}/config.json` }),
    );
    assertEquals(err instanceof RegistryError, true);
    assertEquals(String((err as Error).message).startsWith("Cannot read docker's config"), true);
  });
});

Deno.test("storeCredentials - writes auths like docker login and keeps other keys", async () => {
  await withDir(async (dir) => {
    const configPath = `${dir}/sub/config.json`;
    await Deno.mkdir(`${dir}/sub`);
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({ auths: { "a:1": { auth: b64("u:p") } }, psFormat: "x" }),
    );
    const where = await storeCredentials("b:2", { username: "me", password: "pw" }, {
      configPath,
    });
    assertEquals(where, { kind: "file", path: configPath });
    const saved = JSON.parse(await Deno.readTextFile(configPath));
    assertEquals(saved.psFormat, "x");
    assertEquals(saved.auths["a:1"].auth, b64("u:p"));
    assertEquals(saved.auths["b:2"].auth, b64("me:pw"));
    assertEquals((await Deno.stat(configPath)).mode! & 0o777, 0o600);
    assertEquals((await lookupCredentials("b:2", { configPath }))?.username, "me");
  });
});

Deno.test("credential helpers - credHelpers and credsStore run docker-credential-NAME", async () => {
  await withDir(async (dir) => {
    // A real helper process speaking the docker-credential-helpers protocol, backed by files.
    const helper = `${dir}/docker-credential-shurutest`;
    await Deno.writeTextFile(
      helper,
      `#!/bin/sh
set -e
db="${dir}/db"; mkdir -p "$db"
case "$1" in
  get) server=$(cat); key=$(printf %s "$server" | tr '/:' '__')
       if [ -f "$db/$key" ]; then cat "$db/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) input=$(cat); key=$(printf %s "$input" | sed 's/.*"ServerURL":"\\([^"]*\\)".*/\\1/' | tr '/:' '__')
       printf %s "$input" > "$db/$key" ;;
  *) exit 1 ;;
esac
`,
    );
    await Deno.chmod(helper, 0o755);
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify({ credsStore: "shurutest" }));
    const oldPath = Deno.env.get("PATH") ?? "";
    Deno.env.set("PATH", `${dir}:${oldPath}`);
    try {
      assertEquals(await lookupCredentials("localhost:5000", { configPath }), null);
      const where = await storeCredentials("localhost:5000", { username: "al", password: "pw" }, {
        configPath,
      });
      assertEquals(where, { kind: "helper", helper: "shurutest" });
      assertEquals(await lookupCredentials("localhost:5000", { configPath }), {
        kind: "basic",
        username: "al",
        password: "pw",
      });
      // The config file itself holds no secret.
      assertEquals(JSON.parse(await Deno.readTextFile(configPath)), { credsStore: "shurutest" });
      // credHelpers wins over credsStore for its host; a missing helper is a clear error.
      await Deno.writeTextFile(
        configPath,
        JSON.stringify({ credsStore: "shurutest", credHelpers: { "localhost:5000": "nothere" } }),
      );
      const err = await assertRejects(
        () => lookupCredentials("localhost:5000", { configPath }),
      );
      assertEquals(err instanceof RegistryError, true);
      assertEquals((err as Error).message.includes("docker-credential-nothere"), true);
    } finally {
      Deno.env.set("PATH", oldPath);
    }
  });
});
