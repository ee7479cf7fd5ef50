/**
 * `shuru checkpoint push NAME REF` and `shuru checkpoint pull REF [NAME]`: checkpoints to and
 * from OCI registries (`docs/remote.md`).
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { RegistryError } from "../oci/mod.ts";
import { pullCheckpoint, pushCheckpoint, StoreError } from "../store/mod.ts";
import { UserError } from "./errors.ts";
import { formatBytes, openHomeStore } from "./store.ts";
import { TransferPrinter } from "./transfer_progress.ts";

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Runs `fn`, turning registry and store errors into one-line {@linkcode UserError}s. */
async function oneLine<T>(printer: TransferPrinter, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof RegistryError || err instanceof StoreError) {
      throw new UserError(err.message, { exitCode: 1, cause: err });
    }
    throw err;
  } finally {
    printer.finish();
  }
}

const INSECURE_HELP =
  "allow plain HTTP to this registry host (repeatable; loopback registries always may)";

/** Builds `shuru checkpoint push`. */
export function checkpointPushCommand(): Command {
  return new Command("push")
    .description(
      "Push checkpoint NAME to an OCI registry as REF (REGISTRY/REPOSITORY:TAG). Only what the\n" +
        "registry lacks is sent: chunks already in earlier pushes to the repository (or in the\n" +
        "checkpoint this one was pulled from) are referenced, not uploaded, and an interrupted\n" +
        "push sends only what did not arrive. Credentials: `shuru login` or docker's\n" +
        "(~/.docker/config.json, credential helpers). Progress on stderr.\n" +
        "Example: shuru checkpoint push deps ghcr.io/team/deps:v1",
    )
    .argument("<name>", "local checkpoint")
    .argument("<ref>", "registry reference with a tag")
    .option("--json", "print the result (digest, chunks sent and reused, bytes) as JSON")
    .option("--no-compress", "store chunks uncompressed (default: zstd when it helps)")
    .option("--insecure-registry <HOST>", INSECURE_HELP, collect)
    .action(async (name, ref, opts) => {
      const printer = new TransferPrinter(`pushing ${name} to ${ref}`);
      const r = await oneLine(
        printer,
        async () =>
          pushCheckpoint(await openHomeStore(), name, ref, {
            compress: opts.compress,
            insecureRegistries: opts.insecureRegistry ?? [],
            onProgress: printer.onProgress,
            onNote: (l) => console.error(l),
            onRetry: (l) => console.error(l),
          }),
      );
      if (opts.json) {
        console.log(JSON.stringify(r));
        return;
      }
      console.log(
        `pushed ${name} to ${r.ref}@${r.digest}: ${r.newChunks} new chunks ` +
          `(${formatBytes(r.bytesSent)} sent), ${r.reusedChunks} already in the registry` +
          (r.resumedPacks > 0 ? `, ${r.resumedPacks} packs already uploaded` : ""),
      );
    }) as unknown as Command;
}

/** Builds `shuru checkpoint pull`. */
export function checkpointPullCommand(): Command {
  return new Command("pull")
    .description(
      "Pull a checkpoint from an OCI registry into the local store as NAME (default: the\n" +
        "repository's last component). Chunks already here are not fetched (an interrupted\n" +
        "pull resumes); every chunk is checked against its hash; the checkpoint is listed only\n" +
        "once complete. To boot without pulling everything: shuru run --from REF.\n" +
        "Example: shuru checkpoint pull ghcr.io/team/deps:v1 deps",
    )
    .argument("<ref>", "registry reference (tag or @sha256: digest)")
    .argument("[name]", "local checkpoint name")
    .option("--json", "print the result (name, digest, chunks and bytes fetched) as JSON")
    .option("--overwrite", "replace an existing checkpoint of that name")
    .option("--insecure-registry <HOST>", INSECURE_HELP, collect)
    .action(async (ref, name, opts) => {
      const printer = new TransferPrinter(`pulling ${ref}`);
      const r = await oneLine(printer, async () =>
        pullCheckpoint(await openHomeStore(), ref, {
          ...(name !== undefined ? { name } : {}),
          overwrite: opts.overwrite ?? false,
          insecureRegistries: opts.insecureRegistry ?? [],
          onProgress: printer.onProgress,
          onRetry: (l) => console.error(l),
        }));
      if (opts.json) {
        console.log(JSON.stringify(r));
        return;
      }
      console.log(
        `pulled ${r.ref}@${r.digest} as checkpoint ${r.name}: ${r.fetchedChunks} chunks ` +
          `fetched (${formatBytes(r.fetchedBytes)}), ${r.chunks - r.fetchedChunks} were local`,
      );
    }) as unknown as Command;
}
