import { assertEquals } from "../tests/_assert.ts";
import { dataHome, homeLayout } from "./home.ts";

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
