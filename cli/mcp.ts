/**
 * `shuru mcp`: an MCP server on stdio (npm `@modelcontextprotocol/sdk`) whose tools drive shuru
 * sandboxes through the SDK in `mod.ts`, i.e. through the control protocol only.
 *
 * Without `sandbox_id`, tools use a default sandbox: the one given with `--connect`, else one it
 * starts on first use. Sandboxes it started are stopped when idle for `--idle-timeout` and when
 * it exits (they are created with `stop_on_close`, so even a crash stops them).
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
// The package's "./*" export maps types to "*.js.d.ts", which does not exist: name the types.
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/stdio"
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";
import { type CreateOptions, Sandbox, SandboxError } from "../sdk/mod.ts";
import { UserError } from "./errors.ts";
import { VERSION } from "../host/mod.ts";
import process from "node:process";
import { concatBytes } from "../io/mod.ts";
import { parseDuration } from "../spec/mod.ts";

/** Characters of exec output returned inline; the rest is cut to head and tail. */
const INLINE_OUTPUT_CHARS = 20_000;
/** Characters of a file returned by read_file without offset/length. */
const READ_FILE_CHARS = 256 * 1024;

interface Entry {
  id: string;
  sandbox: Sandbox;
  owned: boolean;
  lastUsed: number;
}

/** Options of {@linkcode createMcpServer}. */
export interface McpServerOptions {
  /** Use this control socket as the default sandbox (`unix:PATH`, a path or a sandbox name). */
  connect?: string;
  /** Stop sandboxes this server started after this many ms without a tool call. */
  idleTimeoutMs: number;
  /** Options for sandboxes it starts. */
  create?: CreateOptions;
  /** Time source for idleness (ms). */
  now?: () => number;
}

/** The MCP server and a function that stops the sandboxes it started. */
export interface ShuruMcp {
  /** The MCP server (connect it to a transport). */
  server: McpServer;
  /** Stops sandboxes idle for longer than the timeout; returns their ids. */
  reapIdle(): Promise<string[]>;
  /** Stops every sandbox it started and disconnects from the others. */
  close(): Promise<void>;
}

function json(value: Record<string, unknown>) {
  return {
    content: [{ type: "text" as const, text: JSON.stringify(value, null, 2) }],
    structuredContent: value,
  };
}

function failure(err: unknown) {
  const code = err instanceof SandboxError ? err.code : "ERROR";
  const message = err instanceof Error ? err.message : String(err);
  return {
    content: [{ type: "text" as const, text: `${code}: ${message}` }],
    isError: true,
  };
}

function cut(text: string): { text: string; cut: boolean } {
  if (text.length <= INLINE_OUTPUT_CHARS) return { text, cut: false };
  const half = INLINE_OUTPUT_CHARS / 2;
  const omitted = text.length - INLINE_OUTPUT_CHARS;
  return {
    text: `${text.slice(0, half)}\n[... ${omitted} characters cut ...]\n${text.slice(-half)}`,
    cut: true,
  };
}

/** Builds the MCP server with every shuru tool. */
export function createMcpServer(options: McpServerOptions): ShuruMcp {
  const now = options.now ?? (() => Date.now());
  const sandboxes = new Map<string, Entry>();
  let defaultId: string | null = null;
  let defaultStarting: Promise<Entry> | null = null;
  let outputCounter = 0;

  const server = new McpServer(
    { name: "shuru", version: VERSION },
    {
      instructions: "Run commands and edit files in shuru microVM sandboxes. Without sandbox_id, " +
        "tools use a default sandbox started on first use.",
    },
  );

  async function add(sandbox: Sandbox, owned: boolean): Promise<Entry> {
    const entry = { id: sandbox.name, sandbox, owned, lastUsed: now() };
    sandboxes.set(entry.id, entry);
    return await Promise.resolve(entry);
  }

  async function get(id: string | undefined): Promise<Entry> {
    let entry: Entry | undefined;
    if (id !== undefined) {
      entry = sandboxes.get(id);
      if (!entry) {
        throw new SandboxError(
          "CONNECT",
          `Cannot find sandbox ${id}: known ones are ${[...sandboxes.keys()].join(", ") || "none"}`,
        );
      }
    } else if (defaultId && sandboxes.has(defaultId)) {
      entry = sandboxes.get(defaultId)!;
    } else {
      defaultStarting ??= (async () => {
        const sb = options.connect
          ? await Sandbox.connect(options.connect)
          : await Sandbox.create(options.create ?? {});
        const e = await add(sb, !options.connect);
        defaultId = e.id;
        return e;
      })().finally(() => (defaultStarting = null));
      entry = await defaultStarting;
    }
    entry.lastUsed = now();
    return entry;
  }

  const sandboxId = z.string().optional().describe("Sandbox to use (default: the default sandbox)");
  const env = z.record(z.string()).optional().describe("Extra environment variables");

  server.registerTool("sandbox_create", {
    description: "Boot a new sandbox (a Linux microVM); returns its id.",
    inputSchema: {
      name: z.string().optional(),
      from: z.string().optional().describe("Checkpoint to start from"),
      image: z.string().optional().describe(
        "OCI image as the root filesystem: python:3.12-slim, registry/repo:tag, oci:DIR[:TAG] " +
          "or docker-archive:FILE (its Env, WorkingDir and User apply to commands)",
      ),
      arch: z.enum(["x86_64", "arm64"]).optional().describe(
        "Guest architecture (default: the checkpoint's, else the host's; another one is emulated)",
      ),
      cpus: z.number().int().positive().optional(),
      memory_mib: z.number().int().positive().optional(),
      allow_net: z.boolean().optional(),
    },
    outputSchema: { sandbox_id: z.string() },
  }, async (a) => {
    try {
      const sb = await Sandbox.create({
        ...options.create,
        ...(a.name ? { name: a.name } : {}),
        ...(a.from ? { from: a.from } : {}),
        ...(a.image ? { image: a.image } : {}),
        ...(a.arch ? { arch: a.arch } : {}),
        ...(a.cpus ? { cpus: a.cpus } : {}),
        ...(a.memory_mib ? { memoryMiB: a.memory_mib } : {}),
        ...(a.allow_net ? { network: { allowNet: true } } : {}),
      });
      const e = await add(sb, true);
      return json({ sandbox_id: e.id });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("sandbox_list", {
    description: "List the sandboxes this server uses.",
    inputSchema: {},
    outputSchema: {
      sandboxes: z.array(z.object({
        sandbox_id: z.string(),
        default: z.boolean(),
        started_here: z.boolean(),
        idle_s: z.number(),
      })),
    },
  }, () =>
    json({
      sandboxes: [...sandboxes.values()].map((e) => ({
        sandbox_id: e.id,
        default: e.id === defaultId,
        started_here: e.owned,
        idle_s: Math.round((now() - e.lastUsed) / 1000),
      })),
    }));

  server.registerTool("sandbox_stop", {
    description: "Stop a sandbox (one this server started) or disconnect from it.",
    inputSchema: { sandbox_id: z.string() },
    outputSchema: { stopped: z.boolean() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      sandboxes.delete(e.id);
      if (defaultId === e.id) defaultId = null;
      if (e.owned) await e.sandbox.stop();
      else await e.sandbox.close();
      return json({ stopped: e.owned });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("exec", {
    description: "Run a shell command in the sandbox and wait for it. Long output is cut to its " +
      "head and tail; the full text is saved in the guest (see full_output_path).",
    inputSchema: {
      command: z.string().describe("Shell command, run with /bin/sh -c"),
      sandbox_id: sandboxId,
      cwd: z.string().optional(),
      env,
      timeout_s: z.number().positive().max(86400).optional().describe("Default 300"),
      stdin: z.string().optional(),
    },
    outputSchema: {
      exit_code: z.number(),
      stdout: z.string(),
      stderr: z.string(),
      timed_out: z.boolean(),
      signal: z.string().nullable(),
      full_output_path: z.string().optional(),
    },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const r = await e.sandbox.exec(a.command, {
        ...(a.cwd ? { cwd: a.cwd } : {}),
        ...(a.env ? { env: a.env } : {}),
        ...(a.stdin !== undefined ? { stdin: a.stdin } : {}),
        timeoutMs: Math.round((a.timeout_s ?? 300) * 1000),
        maxOutputBytes: 4 * 1024 * 1024,
      });
      const out = cut(r.stdout);
      const err = cut(r.stderr);
      const result: Record<string, unknown> = {
        exit_code: r.exitCode,
        stdout: out.text,
        stderr: err.text,
        timed_out: r.timedOut,
        signal: r.signal,
      };
      if (out.cut || err.cut) {
        const path = `/tmp/shuru-mcp/exec-${Date.now()}-${++outputCounter}.txt`;
        await e.sandbox.fs.mkdir("/tmp/shuru-mcp", { recursive: true });
        await e.sandbox.fs.writeTextFile(
          path,
          `$ ${a.command}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`,
        );
        result.full_output_path = path;
      }
      return json(result);
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("process_start", {
    description: "Start a long-running shell command in the background; returns its pid.",
    inputSchema: { command: z.string(), sandbox_id: sandboxId, cwd: z.string().optional(), env },
    outputSchema: { pid: z.string() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const proc = await e.sandbox.spawn(a.command, {
        ...(a.cwd ? { cwd: a.cwd } : {}),
        ...(a.env ? { env: a.env } : {}),
      });
      // Output is read later with process_output (from the server's buffer); drop the live copy.
      void proc.stdout.cancel().catch(() => {});
      void proc.stderr.cancel().catch(() => {});
      return json({ pid: proc.pid });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("process_output", {
    description: "Read a background process's output after since_seq (0 = from the start of " +
      "the kept buffer); pass next_since_seq back as since_seq next time.",
    inputSchema: {
      pid: z.string(),
      sandbox_id: sandboxId,
      since_seq: z.number().int().min(0).optional(),
    },
    outputSchema: {
      stdout: z.string(),
      stderr: z.string(),
      next_since_seq: z.number(),
      running: z.boolean(),
      exit_code: z.number().nullable(),
      truncated: z.boolean(),
    },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const r = await e.sandbox.readOutput(a.pid, { sinceSeq: a.since_seq ?? 0 });
      const dec = new TextDecoder();
      let stdout = "";
      let stderr = "";
      for (const c of r.chunks) {
        if (c.stream === "stdout") stdout += dec.decode(c.data);
        else stderr += dec.decode(c.data);
      }
      return json({
        stdout: cut(stdout).text,
        stderr: cut(stderr).text,
        next_since_seq: r.nextSeq - 1,
        running: r.exit === null,
        exit_code: r.exit?.exitCode ?? null,
        truncated: r.truncated,
      });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("process_input", {
    description: "Write text to a background process's stdin.",
    inputSchema: {
      pid: z.string(),
      input: z.string(),
      eof: z.boolean().optional(),
      sandbox_id: sandboxId,
    },
    outputSchema: { ok: z.boolean() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      await e.sandbox.writeInput(a.pid, new TextEncoder().encode(a.input), { eof: a.eof ?? false });
      return json({ ok: true });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("process_kill", {
    description: "Send a signal (default SIGTERM) to a background process.",
    inputSchema: { pid: z.string(), signal: z.string().optional(), sandbox_id: sandboxId },
    outputSchema: { ok: z.boolean() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      await e.sandbox.killProcess(a.pid, a.signal ?? "SIGTERM");
      return json({ ok: true });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("process_list", {
    description: "List the sandbox's processes.",
    inputSchema: { sandbox_id: sandboxId },
    outputSchema: {
      processes: z.array(z.object({
        pid: z.string(),
        command: z.array(z.string()),
        state: z.string(),
        exit_code: z.number().nullable(),
      })),
    },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const ps = await e.sandbox.ps();
      return json({
        processes: ps.map((p) => ({
          pid: p.pid,
          command: p.argv,
          state: p.state,
          exit_code: p.exitCode,
        })),
      });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("read_file", {
    description: "Read a text file from the sandbox (large files: pass offset/length in bytes).",
    inputSchema: {
      path: z.string(),
      sandbox_id: sandboxId,
      offset: z.number().int().min(0).optional(),
      length: z.number().int().min(1).max(READ_FILE_CHARS).optional(),
    },
    outputSchema: { content: z.string(), size: z.number(), truncated: z.boolean() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const st = await e.sandbox.fs.stat(a.path);
      const offset = a.offset ?? 0;
      const length = a.length ?? READ_FILE_CHARS;
      // Read only the asked window, through a process-free chunked read.
      const stream = e.sandbox.fs.readFileStream(a.path);
      const parts: Uint8Array[] = [];
      let pos = 0;
      for await (const chunk of stream) {
        const start = Math.max(0, offset - pos);
        const end = Math.min(chunk.length, offset + length - pos);
        if (end > start) parts.push(chunk.subarray(start, end));
        pos += chunk.length;
        if (pos >= offset + length) break;
      }
      const bytes = concatBytes(parts);
      return json({
        content: new TextDecoder().decode(bytes),
        size: st.size,
        truncated: offset + bytes.length < st.size,
      });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("write_file", {
    description: "Create or replace a text file in the sandbox.",
    inputSchema: { path: z.string(), content: z.string(), sandbox_id: sandboxId },
    outputSchema: { bytes: z.number() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const bytes = new TextEncoder().encode(a.content);
      await e.sandbox.fs.writeFile(a.path, bytes);
      return json({ bytes: bytes.length });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("edit_file", {
    description: "Replace an exact string in a text file. It must occur exactly once unless " +
      "replace_all is set.",
    inputSchema: {
      path: z.string(),
      old_string: z.string().min(1),
      new_string: z.string(),
      replace_all: z.boolean().optional(),
      sandbox_id: sandboxId,
    },
    outputSchema: { replacements: z.number() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const text = await e.sandbox.fs.readTextFile(a.path);
      const count = text.split(a.old_string).length - 1;
      if (count === 0) {
        return failure(new Error(`Cannot edit ${a.path}: old_string was not found`));
      }
      if (count > 1 && !a.replace_all) {
        return failure(
          new Error(
            `Cannot edit ${a.path}: old_string occurs ${count} times; add context or set replace_all`,
          ),
        );
      }
      const next = a.replace_all
        ? text.split(a.old_string).join(a.new_string)
        : text.replace(a.old_string, () => a.new_string);
      await e.sandbox.fs.writeTextFile(a.path, next);
      return json({ replacements: a.replace_all ? count : 1 });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("list_dir", {
    description: "List a directory in the sandbox.",
    inputSchema: { path: z.string(), sandbox_id: sandboxId },
    outputSchema: {
      entries: z.array(z.object({ name: z.string(), type: z.string(), size: z.number() })),
    },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const entries = [];
      for await (const d of e.sandbox.fs.readDir(a.path)) {
        entries.push({
          name: d.name,
          type: d.isDirectory ? "dir" : d.isSymlink ? "symlink" : d.isFile ? "file" : "other",
          size: d.size,
        });
      }
      entries.sort((x, y) => x.name.localeCompare(y.name));
      return json({ entries });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("checkpoint_save", {
    description: "Save the running sandbox's disk as a named checkpoint; it keeps running.",
    inputSchema: { name: z.string(), sandbox_id: sandboxId },
    outputSchema: { name: z.string() },
  }, async (a) => {
    try {
      const e = await get(a.sandbox_id);
      const r = await e.sandbox.checkpoint(a.name);
      return json({ ...r, name: a.name });
    } catch (err) {
      return failure(err);
    }
  });

  server.registerTool("checkpoint_list", {
    description: "List saved checkpoints (start a sandbox from one with sandbox_create.from).",
    inputSchema: {},
    outputSchema: { checkpoints: z.array(z.record(z.unknown())) },
  }, async () => {
    try {
      const shuru = options.create?.shuru ??
        [Deno.execPath(), "run", "-A", new URL("../main.ts", import.meta.url).pathname];
      const out = await new Deno.Command(shuru[0]!, {
        args: [...shuru.slice(1), "checkpoint", "list", "--json"],
        stdin: "null",
      }).output();
      if (!out.success) {
        throw new Error(
          `Cannot list checkpoints: ${new TextDecoder().decode(out.stderr).trim()}`,
        );
      }
      const parsed = JSON.parse(new TextDecoder().decode(out.stdout));
      const list = Array.isArray(parsed) ? parsed : parsed.checkpoints ?? [];
      return json({ checkpoints: list });
    } catch (err) {
      return failure(err);
    }
  });

  return {
    server,
    async reapIdle() {
      const stopped: string[] = [];
      for (const e of [...sandboxes.values()]) {
        if (e.owned && now() - e.lastUsed > options.idleTimeoutMs) {
          sandboxes.delete(e.id);
          if (defaultId === e.id) defaultId = null;
          await e.sandbox.stop().catch(() => {});
          stopped.push(e.id);
        }
      }
      return stopped;
    },
    async close() {
      await Promise.allSettled(
        [...sandboxes.values()].map((e) => e.owned ? e.sandbox.stop() : e.sandbox.close()),
      );
      sandboxes.clear();
    },
  };
}

/** `shuru mcp`: serves MCP on stdin/stdout until stdin closes. */
export function mcpCommand(): Command {
  return new Command("mcp")
    .description(
      "Serve the Model Context Protocol on stdin/stdout: tools to create sandboxes, run commands, " +
        "manage background processes, read/write/edit files and save checkpoints. " +
        "Sandboxes it starts stop when idle and when it exits.",
    )
    .option(
      "--connect <target>",
      "use this running sandbox as the default (a name, unix:PATH of a control socket)",
    )
    .option("--idle-timeout <dur>", "stop sandboxes it started after this idle time", "15m")
    .action(async (opts) => {
      let idleTimeoutMs: number;
      try {
        idleTimeoutMs = parseDuration(opts.idleTimeout);
      } catch (err) {
        throw new UserError(`--idle-timeout: ${(err as Error).message}`);
      }
      const mcp = createMcpServer({
        ...(opts.connect ? { connect: opts.connect } : {}),
        idleTimeoutMs,
      });
      const transport = new StdioServerTransport();
      const closed = new Promise<void>((resolve) => (transport.onclose = resolve));
      await mcp.server.connect(transport);
      const reaper = setInterval(
        () => void mcp.reapIdle().catch(() => {}),
        Math.min(60_000, Math.max(1000, idleTimeoutMs / 4)),
      );
      // The transport does not notice stdin's end by itself.
      const stdinEnded = new Promise<void>((resolve) => {
        process.stdin.once("end", () => resolve());
        process.stdin.once("close", () => resolve());
      });
      await Promise.race([closed, stdinEnded]);
      clearInterval(reaper);
      await mcp.close();
      await mcp.server.close().catch(() => {});
    });
}
