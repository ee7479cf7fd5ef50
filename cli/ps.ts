/**
 * `shuru ps`: the running named sandboxes (stale registry records of dead supervisors are
 * removed on the way).
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { formatDuration } from "../spec/mod.ts";
import { listEntries, removeStale } from "../supervisor/mod.ts";
import { homeLayout } from "../host/mod.ts";

/** Builds `shuru ps`. */
export function psCommand(): Command {
  return new Command("ps")
    .description(
      "List running sandboxes: name, supervisor pid, state, uptime, CPUs, memory, the\n" +
        "checkpoint or image it started from, forwarded ports, the ports its image exposes\n" +
        "(forward them with -p) and network access.",
    )
    .option("--json", "print a JSON array of registry records (with uptimeMs)")
    .action(async (opts) => {
      const registry = homeLayout().sandboxes;
      const entries = await listEntries(registry);
      for (const e of entries) if (!e.alive) await removeStale(registry, e.record);
      const live = entries.filter((e) => e.alive).map((e) => e.record);
      const now = Date.now();
      if (opts.json) {
        console.log(JSON.stringify(live.map((r) => ({
          ...r,
          uptimeMs: now - Date.parse(r.startedAt),
        }))));
        return;
      }
      if (live.length === 0) {
        console.log("no sandboxes running (start one with `shuru start`)");
        return;
      }
      const rows = live.map((r) => [
        r.name,
        String(r.supervisor.pid),
        r.state,
        formatDuration(now - Date.parse(r.startedAt)),
        String(r.cpus),
        `${r.memoryMiB}M`,
        r.from ?? r.image ?? "-",
        r.ports.map((p) => `${p.host}->${p.guest}`).join(",") || "-",
        r.exposedPorts?.join(",") || "-",
        r.network,
      ]);
      const header = [
        "NAME",
        "PID",
        "STATE",
        "UPTIME",
        "CPUS",
        "MEMORY",
        "FROM",
        "PORTS",
        "EXPOSED",
        "NETWORK",
      ];
      const all = [header, ...rows];
      const widths = header.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
      for (const row of all) {
        console.log(row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
      }
    }) as unknown as Command;
}
