import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { AgentInvalidArgumentError } from "./errors.ts";
import {
  parseDirEntry,
  parseExecExit,
  parseExecMessage,
  parseFileInfo,
  parseIdentityResult,
  parseRequest,
  parseWatchEvent,
} from "./messages.ts";

Deno.test("parseRequest - exec with every field", () => {
  assertEquals(
    parseRequest({
      op: "exec",
      argv: ["sh", "-c", "echo"],
      env: { A: "1" },
      cwd: "/tmp",
      tty: { rows: 24, cols: 80, term: "xterm" },
      stdin: true,
      unknownField: 1,
    }),
    {
      op: "exec",
      argv: ["sh", "-c", "echo"],
      env: { A: "1" },
      cwd: "/tmp",
      tty: { rows: 24, cols: 80, term: "xterm" },
      stdin: true,
    },
  );
});

Deno.test("parseRequest - rejects bad exec fields with the field name", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ op: "exec", argv: [] }, "argv"],
    [{ op: "exec", argv: "ls" }, "argv"],
    [{ op: "exec", argv: [1] }, "argv[0]"],
    [{ op: "exec", argv: ["a\0b"] }, "argv[0]"],
    [{ op: "exec", argv: ["ls"], env: { "A=B": "x" } }, "env entry"],
    [{ op: "exec", argv: ["ls"], env: { A: 1 } }, "env entry"],
    [{ op: "exec", argv: ["ls"], cwd: "relative" }, "absolute"],
    [{ op: "exec", argv: ["ls"], tty: { rows: 0, cols: 80 } }, "rows"],
    [{ op: "exec", argv: ["ls"], tty: { rows: 24, cols: 1e9 } }, "cols"],
    [{ op: "exec", argv: ["ls"], stdin: "yes" }, "stdin"],
  ];
  for (const [req, field] of cases) {
    const err = assertThrows(() => parseRequest(req), field);
    assertEquals(err instanceof AgentInvalidArgumentError, true);
  }
});

Deno.test("parseRequest - file operations", () => {
  assertEquals(parseRequest({ op: "read_file", path: "/a", offset: 3 }), {
    op: "read_file",
    path: "/a",
    offset: 3,
  });
  assertEquals(parseRequest({ op: "write_file", path: "/a", mode: 0o600 }), {
    op: "write_file",
    path: "/a",
    mode: 0o600,
  });
  assertEquals(parseRequest({ op: "rename", from: "/a", to: "/b" }), {
    op: "rename",
    from: "/a",
    to: "/b",
  });
  assertEquals(parseRequest({ op: "chmod", path: "/a", mode: 0o755 }), {
    op: "chmod",
    path: "/a",
    mode: 0o755,
  });
  assertEquals(parseRequest({ op: "mount", tag: "t", path: "/m", mode: "ro" }), {
    op: "mount",
    tag: "t",
    path: "/m",
    mode: "ro",
  });
  assertEquals(
    parseRequest({ op: "mount", tag: "t", path: "/m", mode: "rw", transport: "virtiofs" }),
    { op: "mount", tag: "t", path: "/m", mode: "rw", transport: "virtiofs" },
  );
  assertEquals(parseRequest({ op: "shutdown" }), { op: "shutdown" });
  assertEquals(parseRequest({ op: "write_file", path: "/a", offset: 10 }), {
    op: "write_file",
    path: "/a",
    offset: 10,
  });
  assertThrows(
    () => parseRequest({ op: "write_file", path: "/a", offset: 1, append: true }),
    "cannot be combined",
  );
  assertThrows(() => parseRequest({ op: "chmod", path: "/a", mode: 0o17777 }), "mode");
  assertThrows(() => parseRequest({ op: "read_file", path: "/a", offset: -1 }), "offset");
  assertThrows(() => parseRequest({ op: "stat", path: "x".repeat(5000) }), "longer");
  assertThrows(() => parseRequest({ op: "forward", port: 70000 }), "port");
  assertThrows(() => parseRequest({ op: "mount", tag: "t", path: "/m", mode: "x" }), "mode");
  assertThrows(
    () => parseRequest({ op: "mount", tag: "t", path: "/m", mode: "ro", transport: "nfs" }),
    "transport",
  );
  assertThrows(() => parseRequest({ op: "format_disk" }), "unknown op");
});

Deno.test("parseExecMessage - resize and signal", () => {
  assertEquals(parseExecMessage({ type: "resize", rows: 10, cols: 20 }), {
    type: "resize",
    rows: 10,
    cols: 20,
  });
  assertEquals(parseExecMessage({ type: "signal", signal: "SIGTERM" }), {
    type: "signal",
    signal: "SIGTERM",
  });
  assertThrows(() => parseExecMessage({ type: "signal", signal: "rm -rf" }), "signal");
  assertThrows(() => parseExecMessage({ type: "nope" }), "unknown message");
});

Deno.test("result parsers - validate guest output", () => {
  assertEquals(parseExecExit({ exitCode: 137, signal: "SIGKILL" }), {
    exitCode: 137,
    signal: "SIGKILL",
  });
  assertThrows(() => parseExecExit({ exitCode: 300 }), "exitCode");
  assertEquals(
    parseFileInfo({ type: "file", size: 3, mode: 0o644, mtime: null, uid: 0, gid: 0 }).size,
    3,
  );
  assertThrows(() => parseFileInfo({ type: "x", size: 3, mode: 0, mtime: 1, uid: 0, gid: 0 }));
  assertThrows(() => parseDirEntry({ name: "a/b", type: "file" }), "/");
  assertEquals(parseWatchEvent({ kind: "create", paths: ["/a"] }), {
    kind: "create",
    paths: ["/a"],
  });
  assertThrows(() => parseWatchEvent({ kind: "create", paths: ["/a", "/b", "/c"] }), "paths");
});

Deno.test("parseRequest - set_identity: entropy size, clock, hostname and machine-id are checked", () => {
  const ok = {
    op: "set_identity" as const,
    entropy: new Uint8Array(32).fill(1).toBase64(),
    unixMs: 1_796_568_295_123.5,
    hostname: "sb-1.local",
    machineId: "0123456789abcdef0123456789abcdef",
  };
  assertEquals(parseRequest(ok), ok);
  for (
    const [patch, field] of [
      [{ entropy: new Uint8Array(31).toBase64() }, "entropy"],
      [{ entropy: new Uint8Array(513).toBase64() }, "entropy"],
      [{ entropy: "not base64!" }, "entropy"],
      [{ entropy: undefined }, "entropy"],
      [{ unixMs: -1 }, "unixMs"],
      [{ unixMs: Infinity }, "unixMs"],
      [{ unixMs: "now" }, "unixMs"],
      [{ hostname: "" }, "hostname"],
      [{ hostname: "-x" }, "hostname"],
      [{ hostname: "a b" }, "hostname"],
      [{ hostname: "x".repeat(65) }, "hostname"],
      [{ machineId: "0123456789ABCDEF0123456789ABCDEF" }, "machineId"],
      [{ machineId: "0123" }, "machineId"],
    ] as [Record<string, unknown>, string][]
  ) {
    const err = assertThrows(() => parseRequest({ ...ok, ...patch }), field);
    assertEquals(err instanceof AgentInvalidArgumentError, true, String(err));
  }
  assertEquals(parseIdentityResult({ entropyBits: 512, clockStepMs: 19_000.5 }), {
    entropyBits: 512,
    clockStepMs: 19_000.5,
  });
  assertThrows(() => parseIdentityResult({ entropyBits: 512 }), "clockStepMs");
});
