import { assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { UserError } from "./errors.ts";
import { parseSecretFlag, parseSecretsConfig, resolveSecrets } from "./secrets.ts";

const VALUE = "sk-proj-abcdefghijkl";
const env = (vars: Record<string, string>) => ({ env: (n: string) => vars[n] });

Deno.test("--secret NAME=VALUE@HOSTS: the last @ starts the hosts, so a value may hold @", () => {
  assertEquals(parseSecretFlag(`KEY=${VALUE}@api.example.com,*.example.org`), {
    name: "KEY",
    value: VALUE,
    hosts: ["api.example.com", "*.example.org"],
  });
  assertEquals(
    parseSecretFlag("PASS=user@corp:secret123@git.example.com").value,
    "user@corp:secret123",
  );
});

Deno.test("--secret NAME@HOSTS takes the value from the host's $NAME", () => {
  assertEquals(parseSecretFlag("GH_TOKEN@github.com", env({ GH_TOKEN: "ghp_0123456789" })), {
    name: "GH_TOKEN",
    value: "ghp_0123456789",
    hosts: ["github.com"],
  });
});

Deno.test("--secret options after the hosts: :inject=PLACES and :allow_http", () => {
  assertEquals(parseSecretFlag(`KEY=${VALUE}@a.test,b.test:inject=header,query:allow_http`), {
    name: "KEY",
    value: VALUE,
    hosts: ["a.test", "b.test"],
    inject: ["header", "query"],
    allowHttp: true,
  });
  assertEquals(
    parseSecretFlag("T@a.test:inject=body", env({ T: "a:b@c:0123456789" })),
    { name: "T", value: "a:b@c:0123456789", hosts: ["a.test"], inject: ["body"] },
  );
});

Deno.test("--secret errors name the problem and never echo a value", () => {
  const cases: [string, RegExp][] = [
    [`KEY=${VALUE}`, /expected NAME=VALUE@HOST/],
    [`${VALUE}`, /expected NAME=VALUE@HOST/],
    [`KEY=${VALUE}@`, /needs hosts/],
    [`KEY=${VALUE}@not a host`, /host pattern/],
    ["KEY=short@api.test", /shorter than 8/],
    ["MISSING@api.test", /MISSING is not set/],
    [`1KEY=${VALUE}@api.test`, /environment variable name/],
    [`KEY=${VALUE}@api.test:inject=cookie`, /"cookie" is not a place/],
    [`KEY=${VALUE}@api.test:inject=`, /"" is not a place/],
    [`KEY=${VALUE}@api.test:https_only`, /unknown option "https_only"/],
  ];
  for (const [spec, message] of cases) {
    const err = assertThrows(() => parseSecretFlag(spec, env({})));
    assertEquals(err instanceof UserError, true, err.message);
    assertEquals(message.test(err.message), true, `${spec}: ${err.message}`);
    assertEquals(err.message.includes(VALUE), false, `value echoed: ${err.message}`);
  }
});

Deno.test("config secrets: value, from_env and command; exactly one source each", async () => {
  const got = await parseSecretsConfig(
    {
      A: { value: VALUE, hosts: ["a.test"] },
      B: { from_env: "SOME_VAR", hosts: ["b.test"] },
      C: { command: "printf 'from-a-command\\n'", hosts: ["*.c.test"] },
    },
    "shuru.json",
    env({ SOME_VAR: "env-value-123" }),
  );
  assertEquals(got, [
    { name: "A", value: VALUE, hosts: ["a.test"] },
    { name: "B", value: "env-value-123", hosts: ["b.test"] },
    { name: "C", value: "from-a-command", hosts: ["*.c.test"] },
  ]);
  await assertRejects(
    () => parseSecretsConfig({ A: { value: VALUE, command: "x", hosts: ["a.test"] } }, "f.json"),
    "exactly one of value, from_env, command",
  );
  await assertRejects(
    () =>
      parseSecretsConfig({ A: { command: "echo oops >&2; exit 3", hosts: ["a.test"] } }, "f.json"),
    "exited with status 3: oops",
  );
  await assertRejects(
    () => parseSecretsConfig({ A: { value: VALUE, hosts: "a.test" } }, "f.json"),
    "secrets.A.hosts must be an array",
  );
});

Deno.test("config secrets: inject and allow_http", async () => {
  const got = await parseSecretsConfig(
    {
      A: { value: VALUE, hosts: ["a.test"], inject: ["header", "body"], allow_http: true },
      B: { value: VALUE, hosts: ["b.test"], allow_http: false },
    },
    "shuru.json",
  );
  assertEquals(got, [
    { name: "A", value: VALUE, hosts: ["a.test"], inject: ["header", "body"], allowHttp: true },
    { name: "B", value: VALUE, hosts: ["b.test"] },
  ]);
  await assertRejects(
    () => parseSecretsConfig({ A: { value: VALUE, hosts: ["a"], inject: "body" } }, "f.json"),
    "secrets.A.inject for secret A: expected a list of header, query, body",
  );
  await assertRejects(
    () => parseSecretsConfig({ A: { value: VALUE, hosts: ["a"], inject: ["path"] } }, "f.json"),
    '"path" is not a place',
  );
  await assertRejects(
    () => parseSecretsConfig({ A: { value: VALUE, hosts: ["a"], allow_http: "yes" } }, "f.json"),
    "allow_http must be true or false",
  );
});

Deno.test("a --secret replaces the config's secret of the same name (flags win)", async () => {
  const got = await resolveSecrets([`A=${VALUE}@flag.test`], {
    secrets: {
      A: { command: "exit 1", hosts: ["config.test"] },
      B: { value: VALUE, hosts: ["b.test"] },
    },
    source: "shuru.json",
  });
  assertEquals(got.map((s) => [s.name, s.hosts[0]]), [["B", "b.test"], ["A", "flag.test"]]);
  await assertRejects(
    () => resolveSecrets([`A=${VALUE}@x.test`, `A=${VALUE}@y.test`], { source: "s" }),
    "twice",
  );
});

Deno.test("run settings: --secret implies --allow-net and joins an existing allow-list", async () => {
  const { resolveRunSettings } = await import("./run.ts");
  const dir = await Deno.makeTempDir({ prefix: "shuru-secret-settings-" });
  const config = `${dir}/shuru.json`;
  await Deno.writeTextFile(config, "{}");
  try {
    const open = await resolveRunSettings([], { config, secret: [`K=${VALUE}@api.test`] });
    assertEquals(open.network?.allowNet, true);
    assertEquals(open.network?.allowHosts, [], "no allow-list: every public name stays open");
    assertEquals(open.network?.secrets?.map((s) => s.name), ["K"]);
    const listed = await resolveRunSettings([], {
      config,
      secret: [`K=${VALUE}@api.test`],
      allowHost: ["pypi.org"],
    });
    assertEquals(listed.network?.allowHosts, ["pypi.org", "api.test"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
