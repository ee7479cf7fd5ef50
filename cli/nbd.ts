/**
 * `shuru nbd serve`: serves a copy-on-write device over a base image or a checkpoint on a Unix
 * socket, until SIGINT/SIGTERM; with `--save NAME` it then saves the device as a checkpoint.
 *
 * @module
 */

import { join } from "node:path";
import { Command, Option } from "@commander-js/extra-typings";
import { NbdServer } from "../nbd/mod.ts";
import { type DeviceSource, openRemoteCheckpoint, validateName } from "../store/mod.ts";
import { looksLikeReference, RegistryError } from "../oci/mod.ts";
import { UserError } from "./errors.ts";
import { homeLayout } from "./home.ts";
import { formatBytes, openHomeStore, parseSize, withStoreErrors } from "./store.ts";

/** Builds `shuru nbd`. */
export function nbdCommand(): Command {
  const nbd = new Command("nbd").description("Serve disks over NBD (the VM's disk path).");
  nbd
    .command("serve")
    .description(
      "Serve a copy-on-write disk over NBD on a Unix socket until SIGINT/SIGTERM." +
        "Writes go to a private overlay in the instance folder; the base or checkpoint is" +
        "never modified. With --save, the disk is saved as a checkpoint when the server stops" +
        "(after clients finished their requests), then the command exits 0." +
        "Example: shuru nbd serve --socket /tmp/d.sock --base rootfs.ext4 --size 4G --save mine",
    )
    .requiredOption("--socket <path>", "Unix socket path to listen on")
    .addOption(new Option("--base <file>", "raw disk image to start from").conflicts("from"))
    .addOption(
      new Option(
        "--from <name>",
        "checkpoint to start from (a registry reference is read lazily)",
      ).conflicts("base"),
    )
    .option("--read-only", "refuse writes")
    .option("--size <bytes>", "device size (e.g. 4294967296 or 4G); may exceed the source")
    .option("--save <name>", "save the disk as this checkpoint when the server stops")
    .option("--overwrite", "with --save: replace an existing checkpoint of that name")
    .option("--export <name>", 'export name accepted besides the default ""')
    .option("--instance-dir <dir>", "folder for the write overlay (default: under the data home)")
    .option("--verbose", "log connections and requests to stderr")
    .action(async (opts) => {
      if (!opts.base && !opts.from) {
        throw new UserError("Cannot serve: give --base FILE or --from CHECKPOINT");
      }
      const size = opts.size === undefined ? undefined : parseSize(opts.size);
      const store = await withStoreErrors(() => openHomeStore());
      if (opts.save !== undefined) {
        const name = opts.save;
        await withStoreErrors(async () => {
          validateName(name);
          if (!opts.overwrite && await store.has(name)) {
            throw new UserError(
              `Cannot save checkpoint "${name}": it already exists (delete it or add --overwrite)`,
            );
          }
        });
      }
      const overlayDir = opts.instanceDir ??
        join(homeLayout().instances, `nbd-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
      const ownsOverlayDir = opts.instanceDir === undefined;
      let source: DeviceSource = opts.base ? { base: opts.base } : { checkpoint: opts.from! };
      if (!opts.base && looksLikeReference(opts.from!)) {
        try {
          source = (await withStoreErrors(() =>
            openRemoteCheckpoint(store, opts.from!, {
              onRetry: (l) => console.error(l),
            })
          )).source;
        } catch (err) {
          if (err instanceof RegistryError) throw new UserError(err.message, { exitCode: 1 });
          throw err;
        }
      }
      const device = await withStoreErrors(() =>
        store.openDevice(source, {
          overlayDir,
          readOnly: opts.readOnly ?? false,
          ...(size !== undefined ? { size } : {}),
        })
      );
      let server: NbdServer | undefined;
      const stop = Promise.withResolvers<string>();
      const onInt = () => stop.resolve("SIGINT");
      const onTerm = () => stop.resolve("SIGTERM");
      Deno.addSignalListener("SIGINT", onInt);
      Deno.addSignalListener("SIGTERM", onTerm);
      try {
        server = await NbdServer.listen(device, {
          socketPath: opts.socket,
          ...(opts.export !== undefined ? { exportName: opts.export } : {}),
          log: (level, message) => {
            if (opts.verbose || level === "warn" || level === "error") {
              console.error(`shuru nbd: ${level}: ${message}`);
            }
          },
        }).catch((err) => {
          throw new UserError(`Cannot listen on ${opts.socket}: ${(err as Error).message}`, {
            exitCode: 1,
            cause: err,
          });
        });
        console.error(
          `shuru: serving ${formatBytes(device.size)} ${
            opts.base ? `over ${opts.base}` : `from checkpoint ${opts.from}`
          } on ${opts.socket}${device.readOnly ? " (read-only)" : ""}`,
        );
        const signal = await stop.promise;
        console.error(`shuru: ${signal}: stopping`);
        // Answers requests in flight (including a FLUSH) and closes connections first.
        await server.close();
        if (opts.save !== undefined) {
          const r = await withStoreErrors(() =>
            device.save(opts.save!, { overwrite: opts.overwrite ?? false })
          );
          console.error(
            `shuru: saved checkpoint ${r.name}: ${r.usedBlocks} blocks used, ` +
              `${r.newChunks} new chunks (${formatBytes(r.newBytes)}), ` +
              `${Math.round(r.elapsedMs)} ms`,
          );
        }
      } finally {
        Deno.removeSignalListener("SIGINT", onInt);
        Deno.removeSignalListener("SIGTERM", onTerm);
        await server?.close();
        await device.close();
        if (ownsOverlayDir) await Deno.remove(overlayDir, { recursive: true }).catch(() => {});
      }
    });
  return nbd as unknown as Command;
}
