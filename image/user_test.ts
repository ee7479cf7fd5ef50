import { assert, assertEquals } from "../tests/_assert.ts";
import { ImageError } from "./errors.ts";
import { resolveUser } from "./user.ts";

const files = {
  passwd: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\nbroken line\n",
  group: "root:x:0:\nstaff:x:50:\nappgrp:x:1001:\ndev:x:2000:app,other\n",
};

Deno.test("resolveUser - names and numbers the way runc reads them", () => {
  assertEquals(resolveUser("app", files, "img"), {
    spec: "app",
    uid: 1000,
    gid: 1001,
    groups: [2000],
    home: "/home/app",
  });
  assertEquals(resolveUser("app:staff", files, "img").gid, 50);
  assertEquals(resolveUser("app:staff", files, "img").groups, []);
  assertEquals(resolveUser("1000", files, "img").home, "/home/app");
  // A number the image does not know: group 0, home /.
  assertEquals(resolveUser("4242", files, "img"), {
    spec: "4242",
    uid: 4242,
    gid: 0,
    groups: [],
    home: "/",
  });
  assertEquals(resolveUser("4242:77", {}, "img").gid, 77);
});

Deno.test("resolveUser - an unknown name is one line naming the file", () => {
  for (const [spec, re] of [["ghost", /\/etc\/passwd/], ["app:ghosts", /\/etc\/group/]] as const) {
    let err: unknown;
    try {
      resolveUser(spec, files, "img");
    } catch (e) {
      err = e;
    }
    assert(err instanceof ImageError && re.test(err.message), String(err));
  }
});
