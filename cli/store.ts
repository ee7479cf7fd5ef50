/**
 * `shuru store ...`: maintenance of the content-addressed block store (`shuru store gc`), plus
 * the size formatting the store commands share.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { Store } from "../store/mod.ts";
import { UserError } from "./errors.ts";
import { homeLayout } from "../host/mod.ts";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** Formats a byte count for people: `65536` → `64.0 KiB`. */
export function formatBytes(bytes: number): string {
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

/** Parses a size: plain bytes, or a number with K, M, G, T (binary, optional "iB"/"B"). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const unit = m ? " kmgt".indexOf((m[2] || " ").toLowerCase()) : -1;
  const value = m ? Number(m[1]) * 1024 ** unit : NaN;
  if (!m || !Number.isSafeInteger(value) || value <= 0) {
    throw new UserError(`Cannot use size "${text}": give bytes or a number with K, M, G or T`);
  }
  return value;
}

/** Opens the store of the data home. */
export function openHomeStore(): Promise<Store> {
  return Store.open(homeLayout().store);
}

/** Builds `shuru store`. */
export function storeCommand(): Command {
  const store = new Command("store").description(
    "Maintain the content-addressed block store that holds checkpoints.",
  );
  store
    .command("gc")
    .description(
      "Remove chunks no checkpoint references (and files left by interrupted saves)." +
        "Safe while saves run: gc takes the store lock exclusively and waits for them.",
    )
    .option("--json", "print the report as JSON")
    .option(
      "--prune-base-cache",
      "also drop cached base-image hashes (next save re-reads the base)",
    )
    .action(async (opts) => {
      const store = await openHomeStore();
      const report = await store.gc({ pruneBaseCache: opts.pruneBaseCache ?? false });
      if (opts.json) {
        console.log(JSON.stringify(report));
        return;
      }
      console.log(
        `removed ${report.removedChunks} chunks (${formatBytes(report.freedBytes)}), ` +
          `kept ${report.keptChunks} (${formatBytes(report.keptBytes)})` +
          (report.removedTempFiles ? `, ${report.removedTempFiles} leftover temp files` : "") +
          (report.removedLeases ? `, ${report.removedLeases} stale leases` : "") +
          (report.removedBaseCaches ? `, ${report.removedBaseCaches} base caches` : "") +
          (report.removedMemoryFiles
            ? `, ${report.removedMemoryFiles} cached RAM files of deleted memory images`
            : ""),
      );
    });
  return store as unknown as Command;
}
