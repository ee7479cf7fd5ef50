/**
 * shuru: a local-first microVM sandbox for AI agents. This module is the TypeScript SDK: it drives
 * a running sandbox through its control socket (docs/control_protocol.md), nothing else.
 *
 * @example
 * ```ts ignore
 * import { Sandbox } from "@shuru/shuru";
 * await using sb = await Sandbox.create({ cpus: 2 });
 * const { stdout, exitCode } = await sb.exec("echo hello");
 * await sb.fs.writeTextFile("/tmp/x.txt", "hi");
 * const proc = await sb.spawn(["python3", "-u", "server.py"]);
 * for await (const chunk of proc.stdout) console.log(new TextDecoder().decode(chunk));
 * ```
 *
 * @module
 */

export * from "./sdk/mod.ts";
