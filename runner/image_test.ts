import { assertEquals } from "../tests/_assert.ts";
import { applySpawnDefaults } from "../agent/mod.ts";
import { defaultsFromMeta, NO_DEFAULTS, spawnDefaults } from "./image.ts";

const settings = {
  env: ["PATH=/usr/bin:/bin", "GREETING=hi"],
  workingDir: "/app",
  command: ["python3", "app.py"],
  user: { spec: "app", uid: 1000, gid: 1000, groups: [27], home: "/home/app" },
  exposedPorts: ["8000/tcp"],
};

Deno.test("spawnDefaults - env, cwd and a setpriv prefix from the tools disk", () => {
  const d = spawnDefaults(settings, "img");
  assertEquals(d.env, { PATH: "/usr/bin:/bin", GREETING: "hi", HOME: "/home/app" });
  assertEquals(d.cwd, "/app");
  assertEquals(d.argvPrefix.slice(-4), ["--reuid=1000", "--regid=1000", "--groups=27", "--"]);
  // The tools disk's loader under its architecture-neutral name.
  assertEquals(d.argvPrefix[0], "/run/shuru/tools/lib/ld.so");
  const root = spawnDefaults(
    { env: settings.env, command: [], exposedPorts: [], workingDir: "" },
    "img",
  );
  assertEquals([root.argvPrefix, root.cwd, root.env.HOME], [[], undefined, undefined]);
});

Deno.test("applySpawnDefaults - the request wins over the image", () => {
  const d = spawnDefaults(settings, "img");
  const cmd = applySpawnDefaults(d, ["id"], { env: { GREETING: "yo" }, cwd: "/tmp" });
  assertEquals(cmd.env.GREETING, "yo");
  assertEquals(cmd.cwd, "/tmp");
  assertEquals(cmd.argv.at(-1), "id");
  assertEquals(applySpawnDefaults(NO_DEFAULTS, ["id"], {}), { argv: ["id"], env: {} });
});

Deno.test("defaultsFromMeta - reads back what a checkpoint stored; a strange shape gives none", () => {
  assertEquals(defaultsFromMeta({ ref: "x", config: "c", settings }), settings);
  assertEquals(defaultsFromMeta({ ref: "x", config: "c", settings: { env: "nope" } }), undefined);
  assertEquals(
    defaultsFromMeta({ ref: "x", config: "c", settings: { ...settings, user: { uid: "0" } } }),
    undefined,
  );
});
