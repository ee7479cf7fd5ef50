import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { ImageError } from "./errors.ts";
import {
  type Descriptor,
  documentMediaType,
  MEDIA,
  parseConfig,
  parseManifest,
  selectPlatform,
} from "./manifest.ts";

const D = "sha256:" + "a".repeat(64);

function imageError(fn: () => unknown, code: string, re: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert(err instanceof ImageError, `expected an ImageError, got ${err}`);
  assertEquals(err.code, code, err.message);
  assert(re.test(err.message), err.message);
}

Deno.test("parseManifest - layers must be tar layers; the config an image config", () => {
  const good = {
    schemaVersion: 2,
    config: { mediaType: MEDIA.ociConfig, digest: D, size: 10 },
    layers: [
      { mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", digest: D, size: 5 },
      { mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", digest: D, size: 5 },
    ],
  };
  assertEquals(parseManifest(good, "m").layers.length, 2);
  imageError(
    () =>
      parseManifest(
        { ...good, layers: [{ mediaType: "application/x-helm", digest: D, size: 1 }] },
        "m",
      ),
    "unsupported_media_type",
    /layer 1 has media type "application\/x-helm"/,
  );
  imageError(
    () =>
      parseManifest({
        ...good,
        config: { mediaType: "application/vnd.cncf.helm.config", digest: D, size: 1 },
      }, "m"),
    "unsupported_media_type",
    /not an image config/,
  );
  imageError(
    () =>
      parseManifest({
        ...good,
        layers: [{ mediaType: MEDIA.ociConfig, digest: "sha512:ab", size: 1 }],
      }, "m"),
    "unsupported_media_type",
    /algorithm other than sha256/,
  );
  imageError(
    () => parseManifest({ ...good, schemaVersion: 1 }, "m"),
    "bad_manifest",
    /schemaVersion/,
  );
});

Deno.test("documentMediaType - declared, then the document's own, then its shape", () => {
  assertEquals(documentMediaType({ manifests: [] }, undefined, "x"), MEDIA.ociIndex);
  assertEquals(documentMediaType({ config: {} }, "application/json", "x"), MEDIA.ociManifest);
  assertEquals(
    documentMediaType({ mediaType: MEDIA.dockerList }, undefined, "x"),
    MEDIA.dockerList,
  );
  imageError(
    () => documentMediaType({ schemaVersion: 1 }, undefined, "x"),
    "unsupported_media_type",
    /schema 1/,
  );
});

Deno.test("selectPlatform - this host's platform, or the only unplatformed entry", () => {
  const entry = (arch: string | undefined): Descriptor => ({
    mediaType: MEDIA.ociManifest,
    digest: D,
    size: 1,
    ...(arch ? { platform: { os: "linux", architecture: arch } } : {}),
  });
  const host = { os: "linux", architecture: "amd64" };
  assertEquals(
    selectPlatform([entry("arm64"), entry("amd64")], "x", host).platform?.architecture,
    "amd64",
  );
  assertEquals(selectPlatform([entry(undefined)], "x", host).platform, undefined);
  imageError(
    () => selectPlatform([entry("arm64"), entry("s390x")], "img", host),
    "no_platform",
    /no linux\/amd64 image \(it has linux\/arm64, linux\/s390x\)/,
  );
});

Deno.test("parseConfig - what a sandbox uses, checked", () => {
  const c = parseConfig({
    os: "linux",
    architecture: "amd64",
    config: {
      Env: ["PATH=/bin", "A=b=c"],
      WorkingDir: "/app",
      Entrypoint: ["/e"],
      Cmd: ["c"],
      User: "app:staff",
      ExposedPorts: { "8080/tcp": {}, "53/udp": {} },
    },
    rootfs: { type: "layers", diff_ids: [D] },
  }, "cfg");
  assertEquals(c.env, ["PATH=/bin", "A=b=c"]);
  assertEquals([c.workingDir, c.user], ["/app", "app:staff"]);
  assertEquals([...c.entrypoint, ...c.cmd], ["/e", "c"]);
  assertEquals(c.exposedPorts, ["53/udp", "8080/tcp"]);
  assertThrows(
    () => parseConfig({ config: { Env: ["NOEQUALS"] }, rootfs: { diff_ids: [] } }, "cfg"),
    'has no "="',
  );
  assertThrows(() => parseConfig({ config: {} }, "cfg"), "rootfs");
});
