/**
 * `shuru checkpoint list|inspect|delete`: the saved disks in the store.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { formatBytes, openHomeStore } from "./store.ts";

function when(ms: number | undefined): string {
  return ms === undefined ? "-" : new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

/** Builds `shuru checkpoint`. */
export function checkpointCommand(): Command {
  const checkpoint = new Command("checkpoint").description(
    "Checkpoints are saved disks: `create NAME -- cmd` runs a command in a fresh sandbox " +
      "and saves its disk, `save NAME` saves a running sandbox's disk, `shuru run --from NAME` " +
      "starts from one. `push NAME REF` and `pull REF` move them through OCI registries; " +
      "`shuru run --from REF` starts from a registry's without pulling it first.",
  );
  checkpoint
    .command("list")
    .description("List checkpoints with their disk size and data size.")
    .option("--json", "print a JSON array")
    .action(async (opts) => {
      const list = await (await openHomeStore()).list();
      if (opts.json) {
        console.log(JSON.stringify(list));
        return;
      }
      if (list.length === 0) {
        console.log("no checkpoints");
        return;
      }
      const rows = list.map((c) =>
        c.error ? [c.name, "BROKEN", c.error, "", "", ""] : [
          c.name,
          formatBytes(c.diskSize),
          formatBytes(c.usedBlocks * c.blockSize),
          when(c.createdAt),
          c.parent ?? "-",
          c.origin ? `${c.origin.ref}@${c.origin.digest.slice(0, 19)}` : "-",
        ]
      );
      printTable(["NAME", "DISK", "DATA", "CREATED", "PARENT", "ORIGIN"], rows);
    });
  checkpoint
    .command("inspect")
    .description(
      "Show a checkpoint's disk size, blocks used, and the bytes only it references " +
        "(what deleting it and running `shuru store gc` would free).",
    )
    .argument("<name>", "checkpoint name")
    .option("--json", "print JSON")
    .action(async (name, opts) => {
      const d = await (await openHomeStore()).inspect(name);
      if (opts.json) {
        console.log(JSON.stringify(d));
        return;
      }
      console.log(`name:          ${d.name}`);
      console.log(`disk size:     ${formatBytes(d.diskSize)} (${d.diskSize} bytes)`);
      console.log(`block size:    ${formatBytes(d.blockSize)}`);
      console.log(`blocks used:   ${d.usedBlocks} (${formatBytes(d.usedBytes)})`);
      console.log(`chunks:        ${d.distinctChunks} distinct, ${d.uniqueChunks} unique to it`);
      console.log(`unique bytes:  ${formatBytes(d.uniqueBytes)}`);
      console.log(`manifest:      ${formatBytes(d.manifestBytes)}`);
      console.log(`created:       ${when(d.createdAt)}`);
      console.log(`parent:        ${d.parent ?? "-"}`);
      console.log(`origin:        ${d.origin ? `${d.origin.ref}@${d.origin.digest}` : "-"}`);
      console.log(
        `image:         ${d.image ? `${d.image.ref} (${d.image.config.slice(0, 19)})` : "-"}`,
      );
    });
  checkpoint
    .command("delete")
    .description("Delete a checkpoint. Its chunks are freed by the next `shuru store gc`.")
    .argument("<name>", "checkpoint name")
    .action(async (name) => {
      await (await openHomeStore()).delete(name);
      console.log(`deleted checkpoint ${name}`);
    });
  return checkpoint as unknown as Command;
}

function printTable(header: string[], rows: string[][]): void {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  for (const r of all) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
}
