/**
 * `shuru mcp` through the MCP SDK's own client over stdio (`deno run -A main.ts mcp`), its
 * default sandbox being a control socket served for a REAL guest agent on this host
 * (`--connect`). Creating sandboxes (`sandbox_create`) needs a VM and is covered by the
 * end-to-end tests with QEMU.
 */
import { assert, assertEquals } from "./assert.ts";
import { REPO, startControl } from "./_control_fixture.ts";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/stdio"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

type Result = {
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
  content: Array<{ type: string; text?: string }>;
};

Deno.test("shuru mcp - tools through the MCP SDK client over stdio", async () => {
  await using f = await startControl();
  const transport = new StdioClientTransport({
    command: Deno.execPath(),
    args: ["run", "-A", "--quiet", `${REPO}main.ts`, "mcp", "--connect", `unix:${f.controlSocket}`],
    stderr: "pipe",
    env: { ...Deno.env.toObject(), SHURU_HOME: `${f.dir}/home` },
  });
  const client = new Client({ name: "shuru-test", version: "1" });
  await client.connect(transport);
  try {
    const call = async (name: string, args: Record<string, unknown>) =>
      (await client.callTool({ name, arguments: args })) as Result;
    const tools = (await client.listTools()).tools;
    const names = tools.map((t) => t.name).sort();
    assertEquals(names, [
      "checkpoint_list",
      "checkpoint_save",
      "edit_file",
      "exec",
      "list_dir",
      "process_input",
      "process_kill",
      "process_list",
      "process_output",
      "process_start",
      "read_file",
      "sandbox_create",
      "sandbox_list",
      "sandbox_stop",
      "write_file",
    ]);
    assert(tools.every((t) => t.inputSchema && t.outputSchema), "every tool has both schemas");

    const r1 = await call("exec", { command: "echo hi; exit 4", cwd: f.dir });
    assertEquals(r1.isError, undefined);
    assertEquals(r1.structuredContent, {
      exit_code: 4,
      stdout: "hi\n",
      stderr: "",
      timed_out: false,
      signal: null,
    });
    const r2 = await call("exec", { command: "sleep 20", timeout_s: 0.3 });
    assertEquals(r2.structuredContent?.timed_out, true);
    const r3 = await call("exec", { command: "cat", stdin: "fed", env: { A: "1" } });
    assertEquals(r3.structuredContent?.stdout, "fed");

    // Long output: head and tail inline, the full text saved in the guest.
    const long = await call("exec", { command: "seq 1 20000" });
    const out = long.structuredContent?.stdout as string;
    assert(out.startsWith("1\n2\n") && out.endsWith("19999\n20000\n"), out.slice(0, 20));
    assert(out.includes("characters cut"));
    const full = await Deno.readTextFile(long.structuredContent?.full_output_path as string);
    assert(full.includes("\n10000\n") && full.includes("20000"));

    const file = `${f.dir}/notes.txt`;
    assertEquals(
      (await call("write_file", { path: file, content: "alpha beta\n" })).structuredContent,
      {
        bytes: 11,
      },
    );
    assertEquals(
      (await call("edit_file", { path: file, old_string: "beta", new_string: "gamma" }))
        .structuredContent,
      { replacements: 1 },
    );
    assertEquals(await Deno.readTextFile(file), "alpha gamma\n");
    const missing = await call("edit_file", { path: file, old_string: "zeta", new_string: "x" });
    assertEquals(missing.isError, true);
    const read = await call("read_file", { path: file });
    assertEquals(read.structuredContent, { content: "alpha gamma\n", size: 12, truncated: false });
    const part = await call("read_file", { path: file, offset: 6, length: 5 });
    assertEquals(part.structuredContent?.content, "gamma");
    const notFound = await call("read_file", { path: `${f.dir}/nope` });
    assertEquals(notFound.isError, true);
    assert(notFound.content[0]!.text!.startsWith("ENOENT"), notFound.content[0]!.text);
    const dir = await call("list_dir", { path: f.dir });
    assert(
      (dir.structuredContent?.entries as Array<{ name: string; type: string }>).some((e) =>
        e.name === "notes.txt" && e.type === "file"
      ),
    );

    // Background processes (polled; a hang fails at the deadline).
    const deadline = Date.now() + 120_000;
    const inTime = () => assert(Date.now() < deadline, "process output did not arrive in 120 s");
    const started = await call("process_start", {
      command: "echo ready; read x; echo got $x; sleep 30",
    });
    const pid = started.structuredContent?.pid as string;
    let seq = 0;
    let text = "";
    while (!text.includes("ready")) {
      inTime();
      const o = await call("process_output", { pid, since_seq: seq });
      text += o.structuredContent?.stdout as string;
      seq = o.structuredContent?.next_since_seq as number;
    }
    await call("process_input", { pid, input: "hello\n" });
    while (!text.includes("got hello")) {
      inTime();
      const o = await call("process_output", { pid, since_seq: seq });
      text += o.structuredContent?.stdout as string;
      seq = o.structuredContent?.next_since_seq as number;
    }
    const listed = await call("process_list", {});
    assert(
      (listed.structuredContent?.processes as Array<{ pid: string; state: string }>).some((p) =>
        p.pid === pid && p.state === "running"
      ),
    );
    await call("process_kill", { pid, signal: "SIGKILL" });
    let final: Record<string, unknown> | undefined;
    while (!final || final.running) {
      inTime();
      final = (await call("process_output", { pid, since_seq: seq })).structuredContent;
    }
    assertEquals(final.exit_code, 137);
    const killAgain = await call("process_kill", { pid });
    assertEquals(killAgain.isError, true);

    const listedSandboxes = await call("sandbox_list", {});
    assertEquals(
      (listedSandboxes.structuredContent?.sandboxes as Array<Record<string, unknown>>).map((s) => [
        s.default,
        s.started_here,
      ]),
      [[true, false]],
    );
    // Checkpoints come from the store in the data home (empty here).
    const cps = await call("checkpoint_list", {});
    assertEquals(cps.structuredContent, { checkpoints: [] });
    // A bare agent has no disk: checkpoint_save is a clear tool error, not a crash.
    const cp = await call("checkpoint_save", { name: "c1" });
    assertEquals(cp.isError, true);
    assert(cp.content[0]!.text!.includes("UNSUPPORTED"), cp.content[0]!.text);
  } finally {
    await client.close();
  }
});
