import { assert, assertEquals } from "../tests/assert.ts";
import { dataHome, homeLayout, makeHomePrivate } from "./home.ts";

function withEnv(vars: Record<string, string | undefined>, fn: () => void) {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = Deno.env.get(k);
    if (v === undefined) Deno.env.delete(k);
    else Deno.env.set(k, v);
  }
  try {
    fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  }
}

Deno.test("dataHome - SHURU_HOME wins over XDG_DATA_HOME", () => {
  withEnv({ SHURU_HOME: "/a", XDG_DATA_HOME: "/b" }, () => assertEquals(dataHome(), "/a"));
});

Deno.test("dataHome - XDG_DATA_HOME then HOME", () => {
  withEnv({ SHURU_HOME: undefined, XDG_DATA_HOME: "/b" }, () => {
    assertEquals(dataHome(), "/b/shuru");
  });
  withEnv({ SHURU_HOME: undefined, XDG_DATA_HOME: undefined, HOME: "/h" }, () => {
    assertEquals(dataHome(), "/h/.local/share/shuru");
  });
});

Deno.test("homeLayout - folders under the root", () => {
  const l = homeLayout("/r");
  assertEquals([l.store, l.assets, l.instances], ["/r/store", "/r/assets", "/r/instances"]);
});

const modeOf = async (path: string) => (await Deno.stat(path)).mode! & 0o7777;

Deno.test("makeHomePrivate - creates the home and its folders 0700, its parents as usual", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "shuru-home-" });
  try {
    await Deno.chmod(tmp, 0o755);
    const root = `${tmp}/share/shuru`;
    const notices: string[] = [];
    const changed = await makeHomePrivate(homeLayout(root), { onNotice: (l) => notices.push(l) });
    assertEquals([changed, notices], [[], []]);
    for (const dir of ["", "/store", "/instances", "/sandboxes", "/assets"]) {
      assertEquals(await modeOf(root + dir), 0o700, `${root}${dir}`);
    }
    assertEquals(await modeOf(`${tmp}/share`), 0o777 & ~Deno.umask());
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("makeHomePrivate - tightens an open home once, with one notice; assets elsewhere untouched", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "shuru-home-" });
  try {
    const root = `${tmp}/home`;
    for (const dir of ["", "/store", "/instances"]) {
      await Deno.mkdir(root + dir);
      await Deno.chmod(root + dir, 0o755);
    }
    await Deno.mkdir(`${tmp}/shared-assets`);
    await Deno.chmod(`${tmp}/shared-assets`, 0o755);
    const layout = { ...homeLayout(root), assets: `${tmp}/shared-assets` };
    const notices: string[] = [];
    const changed = await makeHomePrivate(layout, { onNotice: (l) => notices.push(l) });
    assertEquals(changed, [root, `${root}/store`, `${root}/instances`]);
    assertEquals(notices.length, 1);
    assert(notices[0]!.includes(`${root} (was 0755)`), notices[0]);
    for (const dir of ["", "/store", "/instances", "/sandboxes"]) {
      assertEquals(await modeOf(root + dir), 0o700, `${root}${dir}`);
    }
    assertEquals(await modeOf(`${tmp}/shared-assets`), 0o755);
    // Already private: nothing to say.
    assertEquals(await makeHomePrivate(layout, { onNotice: (l) => notices.push(l) }), []);
    assertEquals(notices.length, 1);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("makeHomePrivate - never changes a shared folder such as /tmp; says what to do", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "shuru-home-" });
  try {
    await Deno.chmod(tmp, 0o1777);
    const notices: string[] = [];
    const changed = await makeHomePrivate(homeLayout(tmp), { onNotice: (l) => notices.push(l) });
    assertEquals(changed, []);
    assertEquals(await modeOf(tmp), 0o1777);
    assertEquals(notices.length, 1);
    assert(notices[0]!.includes("shared folder") && notices[0]!.includes("SHURU_HOME"));
    assertEquals(await modeOf(`${tmp}/store`), 0o700, "its own folders are private still");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
