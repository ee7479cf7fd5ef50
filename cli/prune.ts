/**
 * `shuru prune`: removes leftovers of crashed runs (and, on request, old guest assets).
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { ensureAssets, pruneAssets } from "../assets/mod.ts";
import { pruneRegistry } from "../supervisor/mod.ts";
import { pruneInstances } from "../vm/mod.ts";
import { pruneImages } from "../image/mod.ts";
import { GUEST_ARCHES, homeLayout } from "../host/mod.ts";

/** Builds the `prune` subcommand. */
export function pruneCommand() {
  return new Command("prune")
    .summary("remove leftovers of crashed runs")
    .description(
      "Remove records of sandboxes whose supervisor is gone and instance folders whose shuru process is gone (a crashed or killed run), killing any VM they left running. With --assets, also remove guest asset versions other than the current one and abandoned partial builds. With --images, also remove converted --image root filesystems and pulled image layers (the next --image converts again; checkpoints keep their data).",
    )
    .option("--assets", "also remove old guest asset versions")
    .option("--images", "also remove converted images and pulled image layers")
    .option("--json", "print what was removed as JSON")
    .action(async (options) => {
      const layout = homeLayout();
      // Stale sandbox records first: their instance folders are then leftovers too.
      const sandboxes = await pruneRegistry(layout.sandboxes);
      const instances = await pruneInstances(layout.instances);
      let assets: { removed: string[]; bytes: number } | undefined;
      if (options.assets) {
        // Keep the current version of every architecture (a foreign one only when its
        // packages are still in the cache).
        const keep: string[] = [];
        for (const arch of GUEST_ARCHES) {
          const current = await ensureAssets({ assetsDir: layout.assets, arch, checkOnly: true });
          if (current.version) keep.push(current.version);
        }
        assets = await pruneAssets(layout.assets, keep);
      }
      const images = options.images ? await pruneImages(layout.images) : undefined;
      if (options.json) {
        console.log(JSON.stringify({ instances, sandboxes, assets, images }, null, 2));
        return;
      }
      for (const name of sandboxes) console.log(`removed record of dead sandbox ${name}`);
      for (const name of instances.removed) console.log(`removed instance ${name}`);
      for (const pid of instances.killed) console.log(`killed leftover VM process ${pid}`);
      for (const name of assets?.removed ?? []) console.log(`removed assets ${name}`);
      for (const name of images?.removed ?? []) console.log(`removed images/${name}`);
      const freed =
        (assets ? `, ${(assets.bytes / 1024 / 1024).toFixed(0)} MiB of assets freed` : "") +
        (images ? `, ${(images.bytes / 1024 / 1024).toFixed(0)} MiB of images freed` : "");
      console.log(
        `${instances.removed.length} instance(s) removed, ${instances.kept.length} in use${freed}`,
      );
    });
}
