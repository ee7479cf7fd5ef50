import { assert, assertEquals } from "../tests/assert.ts";
import { confineCommand, confineQemu, QEMU_SANDBOX_ARGS } from "./confine.ts";

const decoder = new TextDecoder();

/** Runs `argv` as user nobody with an empty environment; returns its stdout. */
async function runAsNobody(program: string, args: string[]): Promise<string> {
  const out = await new Deno.Command("setpriv", {
    args: ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", program, ...args],
    clearEnv: true,
    cwd: "/",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, `${program} failed: ${decoder.decode(out.stderr)}`);
  return decoder.decode(out.stdout);
}

Deno.test("confineCommand - as an unprivileged user, a user and network namespace with only lo", async () => {
  const script = "id -u; readlink /proc/self/ns/net; ip -o link";
  const command = await confineCommand(["/bin/sh", "-c", script], { netns: "user+net" });
  assert(command.summary.includes("in a user namespace (unshare --user --net)"), command.summary);
  const [uid, netns, ...links] = (await runAsNobody(command.program, command.args))
    .trim().split("\n");
  assertEquals(uid, "65534", "keeps the caller's uid");
  assert(netns !== await Deno.readLink("/proc/self/ns/net"), `same namespace: ${netns}`);
  assertEquals(links.map((l) => l.split(": ")[1]), ["lo"], links.join("\n"));
});

Deno.test("confineCommand - the probe picks a namespace this host allows (as root: unshare --net)", async () => {
  const command = await confineCommand(["/bin/true"]);
  const expected = Deno.uid() === 0
    ? "own network namespace (unshare --net)"
    : "own network namespace in a user namespace";
  assert(command.summary.includes(expected), command.summary);
  const out = await new Deno.Command(command.program, { args: command.args, clearEnv: true })
    .output();
  assert(out.success);
});

Deno.test("confineQemu - the seccomp sandbox comes first; without a namespace the summary says so", async () => {
  const command = await confineQemu("/usr/bin/qemu-system-x86_64", ["-M", "microvm"], {
    netns: "none",
  });
  const argv = [command.program, ...command.args];
  const at = argv.indexOf("/usr/bin/qemu-system-x86_64");
  assertEquals(argv.slice(at + 1), [...QEMU_SANDBOX_ARGS, "-M", "microvm"]);
  assert(!argv.slice(0, at).some((a) => a.endsWith("unshare")), argv.join(" "));
  assert(command.summary.startsWith("QEMU confinement: seccomp filter"), command.summary);
  assert(command.summary.includes("no network namespace (disabled)"), command.summary);
});
