import { assert, assertEquals } from "../tests/_assert.ts";
import { AgentNotFoundError, ConnectionError } from "../agent/mod.ts";
import { AssetError, BundleError } from "../assets/mod.ts";
import { ControlConnectionError, RpcError, RpcErrorCode } from "../control/mod.ts";
import { HostError } from "../host/mod.ts";
import { ImageError } from "../image/mod.ts";
import { RegistryError } from "../oci/mod.ts";
import { RunnerError } from "../runner/mod.ts";
import { NotFoundError, SandboxError } from "../sdk/mod.ts";
import { SpecError } from "../spec/mod.ts";
import { StoreError } from "../store/mod.ts";
import { SupervisorError } from "../supervisor/mod.ts";
import { VmError } from "../vm/mod.ts";
import { runCli } from "./mod.ts";
import { describeError, UserError } from "./errors.ts";

/** One instance of every error class a command can throw at runCli, and its exit code. */
const CASES: Array<[Error, number]> = [
  [new UserError("Cannot run: give a command"), 2],
  [new UserError("Cannot reach sandbox dev: refused", { exitCode: 125 }), 125],
  [new SpecError("invalid_setting", 'Invalid --cpus "x": expected a positive whole number'), 2],
  [new HostError("missing_host_tools", "Cannot build or boot guests: missing qemu"), 2],
  [new AssetError("agent_not_found", "Cannot bundle the guest agent: /x does not exist"), 2],
  [
    new BundleError("digest_mismatch", "Cannot use bundle b.tar.gz: its SHA-256 is a, expected b"),
    2,
  ],
  [new SupervisorError("name_in_use", "Cannot start sandbox dev: a sandbox of that name runs"), 2],
  [new VmError("invalid_config", 'Cannot use accelerator "hvf": use kvm, tcg or auto'), 2],
  [new VmError("spawn_failed", "Cannot start QEMU: not found"), 125],
  [new StoreError("not_found", "Cannot open checkpoint x: no such checkpoint"), 1],
  [new RegistryError("unauthorized", "Cannot pull localhost:5000/x:1: unauthorized"), 1],
  [new ImageError("invalid_reference", 'Cannot use image "a b": it is not a reference'), 2],
  [new ImageError("no_platform", "Cannot use x: it has no linux/amd64 image"), 2],
  [new ImageError("registry", "Cannot pull localhost:5000/x:1: unauthorized"), 1],
  [new RunnerError("boot_failed", "Cannot boot the guest: the VM exited"), 125],
  [new SandboxError("CONNECT", "Cannot connect to sandbox dev: refused"), 125],
  [new NotFoundError("Cannot stat /x: no such file"), 125],
  [new ConnectionError("closed", "Cannot read: the agent connection closed"), 125],
  [new AgentNotFoundError("Cannot open /x: no such file"), 125],
  [new ControlConnectionError("CLOSED", "Cannot send: the connection closed"), 125],
  [new RpcError(RpcErrorCode.SERVER_ERROR, "EIO", "Cannot read /x: I/O error"), 125],
  [new Deno.errors.PermissionDenied("Permission denied (os error 13): mkdir '/x'"), 1],
];

Deno.test("describeError - every error class the CLI meets is one line and a non-zero code", () => {
  for (const [err, code] of CASES) {
    const report = describeError(err);
    assert(report !== undefined, `${err.name} would print a stack trace`);
    assertEquals([err.name, report.exitCode], [err.name, code]);
    assert(!report.message.includes("\n") && report.message.length > 0, report.message);
  }
  assertEquals(describeError(new TypeError("a bug")), undefined, "a bug keeps its stack trace");
});

Deno.test("runCli - a domain error from a command prints `shuru: <message>` and returns its code", async () => {
  const lines: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    // A bad setting is refused at the edge, before anything boots.
    const code = await runCli(["run", "--cpus", "0", "--", "true"]);
    assertEquals(code, 2);
  } finally {
    console.error = original;
  }
  assertEquals(lines, ['shuru: Invalid --cpus "0": expected a positive whole number']);
});
