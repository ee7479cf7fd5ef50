import { assert, assertEquals } from "../tests/_assert.ts";
import { ImageError } from "./errors.ts";
import { parseImageReference } from "./source.ts";

Deno.test("parseImageReference - transports as skopeo writes them, else a registry", () => {
  assertEquals(parseImageReference("oci:./img:v1"), {
    kind: "oci",
    dir: "./img",
    tag: "v1",
    text: "oci:./img:v1",
  });
  assertEquals(parseImageReference("oci:/a/b"), { kind: "oci", dir: "/a/b", text: "oci:/a/b" });
  assertEquals(parseImageReference("docker-archive:x.tar:app:1"), {
    kind: "docker-archive",
    file: "x.tar",
    name: "app:1",
    text: "docker-archive:x.tar:app:1",
  });
  assertEquals(parseImageReference("python:3.12-slim").kind, "registry");
  assertEquals(parseImageReference("docker://localhost:5000/a:1"), {
    kind: "registry",
    ref: "localhost:5000/a:1",
    text: "docker://localhost:5000/a:1",
  });
  for (const bad of ["", "oci:", "oci:dir:", "https://example.com/x"]) {
    let err: unknown;
    try {
      parseImageReference(bad);
    } catch (e) {
      err = e;
    }
    assert(err instanceof ImageError && err.code === "invalid_reference", `${bad}: ${err}`);
  }
});
