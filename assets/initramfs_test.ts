import { assert, assertEquals } from "../tests/_assert.ts";
import { writeCpio } from "./cpio.ts";
import { groupModules, initramfsEntries, initScript } from "./initramfs.ts";
import type { LoadableModule, ModuleGroup } from "./modules.ts";

const mod = (name: string): LoadableModule => ({ name, data: new Uint8Array([1, 2, 3]) });

Deno.test("groupModules loads a shared dependency only in the first group", () => {
  const resolved = new Map<ModuleGroup, LoadableModule[]>([
    ["base", [mod("virtio"), mod("virtio_blk")]],
    ["9p", [mod("virtio"), mod("9pnet"), mod("9p")]],
    ["net", [mod("virtio"), mod("virtio_net")]],
  ]);
  const groups = groupModules(resolved);
  assertEquals(
    groups.filter((g) => g.modules.length > 0).map((g) => [g.group, g.modules.map((m) => m.name)]),
    [["base", ["virtio", "virtio_blk"]], ["9p", ["9pnet", "9p"]], ["net", ["virtio_net"]]],
  );
  assertEquals(groups.map((g) => g.group), [
    "base",
    "mmio",
    "pci",
    "9p",
    "virtiofs",
    "overlay",
    "net",
  ]);
});

Deno.test("the /init script is valid busybox sh and loads groups on request", async () => {
  const script = initScript(groupModules(new Map([["base", [mod("ext4")]], ["9p", [mod("9p")]]])));
  assert(script.includes("load ext4"));
  assert(script.includes("want 9p && load 9p"));
  const check = await new Deno.Command("busybox", { args: ["sh", "-n", "-c", script] }).output();
  assert(check.success, "busybox sh -n rejected the init script (apt-get install busybox-static)");
});

Deno.test("initramfs entries: busybox, console node, modules and an executable /init", async () => {
  const entries = initramfsEntries(
    new Uint8Array([9]),
    groupModules(new Map([["base", [mod("ext4")]]])),
  );
  const archive = writeCpio(entries);
  const child = new Deno.Command("cpio", {
    args: ["-itv", "--quiet"],
    stdin: "piped",
    stdout: "piped",
  })
    .spawn();
  const w = child.stdin.getWriter();
  await w.write(archive);
  await w.close();
  const listing = new TextDecoder().decode((await child.output()).stdout);
  assert(/^-rwxr-xr-x .* init$/m.test(listing), listing);
  assert(/ bin\/busybox$/m.test(listing));
  assert(/^crw.* 5,\s*1 .* dev\/console$/m.test(listing));
  assert(/ lib\/modules\/ext4\.ko$/m.test(listing));
});
