import { assert, assertEquals } from "../tests/assert.ts";
import { VmError } from "./errors.ts";
import {
  ensureSignedDeno,
  ENTITLEMENTS_PLIST,
  grantsVirtualization,
  signedDenoPath,
  signPlan,
} from "./vz_sign.ts";

Deno.test("ENTITLEMENTS_PLIST - a property list granting exactly the virtualization entitlement", async () => {
  // Python's plistlib is an independent reader of Apple's XML plist format.
  const out = await new Deno.Command("python3", {
    args: [
      "-c",
      "import plistlib, sys, json; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = out.stdin.getWriter();
  await writer.write(new TextEncoder().encode(ENTITLEMENTS_PLIST));
  await writer.close();
  const result = await out.output();
  assert(result.success, new TextDecoder().decode(result.stderr));
  assertEquals(JSON.parse(new TextDecoder().decode(result.stdout)), {
    "com.apple.security.virtualization": true,
  });
});

Deno.test("signPlan - ad hoc, with the entitlements, no hardened runtime, a fresh file", () => {
  const plan = signPlan("/Users/dev/.local/share/shuru", "2.9.6");
  assertEquals(plan.target, "/Users/dev/.local/share/shuru/bin/deno-2.9.6-vz");
  assertEquals(plan.temporary, `/Users/dev/.local/share/shuru/bin/deno-2.9.6-vz.tmp-${Deno.pid}`);
  assertEquals(plan.sign, [
    "--force",
    "--sign",
    "-",
    "--entitlements",
    "/Users/dev/.local/share/shuru/bin/vz.entitlements",
    plan.temporary,
  ]);
  assert(!plan.sign.includes("runtime") && !plan.sign.includes("-o"));
  assertEquals(plan.verify, ["--display", "--entitlements", "-", "--xml", plan.temporary]);
  assertEquals(signedDenoPath("/h", "2.9.6"), "/h/bin/deno-2.9.6-vz");
});

Deno.test("grantsVirtualization - reads codesign's entitlement output", () => {
  const granted = ENTITLEMENTS_PLIST.replaceAll("\n", "").replaceAll("\t", "");
  assert(grantsVirtualization(granted));
  assert(grantsVirtualization(ENTITLEMENTS_PLIST));
  assert(!grantsVirtualization(granted.replace("<true/>", "<false/>")));
  assert(!grantsVirtualization("Executable=/usr/bin/deno\n"));
});

Deno.test("ensureSignedDeno - without codesign, says where it comes from", async () => {
  const home = await Deno.makeTempDir();
  try {
    const err = await ensureSignedDeno({ home, path: home }).then(() => undefined, (e) => e);
    if (Deno.build.os === "darwin") return; // codesign is in /usr/bin there
    assert(err instanceof VmError && err.code === "not_signed", String(err));
    assertEquals(
      err.message,
      "Cannot sign Deno for Virtualization.framework: codesign was not found (macOS ships it " +
        "in /usr/bin; if it is missing, install the command line tools: xcode-select --install)",
    );
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
