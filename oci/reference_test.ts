import { assertEquals, assertThrows } from "../tests/assert.ts";
import {
  formatReference,
  isLoopbackRegistry,
  looksLikeReference,
  parseReference,
} from "./reference.ts";
import type { RegistryError } from "./errors.ts";

const D = "sha256:" + "ab".repeat(32);

Deno.test("parseReference - registry, nested repository and tag", () => {
  assertEquals(parseReference("registry.example.com/team/env:tag"), {
    registry: "registry.example.com",
    repository: "team/env",
    tag: "tag",
  });
});

Deno.test("parseReference - localhost with a port", () => {
  assertEquals(parseReference("localhost:5000/x:1"), {
    registry: "localhost:5000",
    repository: "x",
    tag: "1",
  });
  assertEquals(parseReference("127.0.0.1:5000/a/b").tag, "latest");
  assertEquals(parseReference("[::1]:5000/a").registry, "[::1]:5000");
});

Deno.test("parseReference - digest, with and without a tag", () => {
  assertEquals(parseReference(`localhost:5000/x@${D}`), {
    registry: "localhost:5000",
    repository: "x",
    digest: D,
  });
  assertEquals(parseReference(`ghcr.io/o/x:v2@${D}`).tag, "v2");
  assertEquals(formatReference(parseReference(`ghcr.io/o/x:v2@${D}`)), `ghcr.io/o/x:v2@${D}`);
});

Deno.test("parseReference - Docker Hub defaults", () => {
  assertEquals(parseReference("alpine"), {
    registry: "docker.io",
    repository: "library/alpine",
    tag: "latest",
  });
  assertEquals(parseReference("user/env:3").registry, "docker.io");
  assertEquals(parseReference("index.docker.io/user/env").registry, "docker.io");
  assertEquals(parseReference("docker.io/alpine:3").repository, "library/alpine");
});

Deno.test("parseReference - bad input names the part that is wrong", () => {
  for (
    const [text, part] of [
      ["localhost:5000/X", "repository"],
      ["localhost:5000/x:", "tag"],
      ["localhost:5000/x@sha256:zz", "digest"],
      ["localhost:5000/x@md5:" + "a".repeat(32), "digest"],
      ["", "empty"],
      ["a//b", "repository"],
      ["bad_host!:5/x", "registry"],
    ] as const
  ) {
    const err = assertThrows(() => parseReference(text));
    assertEquals((err as RegistryError).code, "invalid_reference");
    if (!(err as Error).message.includes(part)) {
      throw new Error(`"${text}": message lacks "${part}": ${(err as Error).message}`);
    }
  }
});

Deno.test("isLoopbackRegistry - only loopback hosts", () => {
  assertEquals(isLoopbackRegistry("localhost:5000"), true);
  assertEquals(isLoopbackRegistry("127.0.0.1:5000"), true);
  assertEquals(isLoopbackRegistry("127.9.8.7"), true);
  assertEquals(isLoopbackRegistry("[::1]:5000"), true);
  assertEquals(isLoopbackRegistry("10.0.0.1:5000"), false);
  assertEquals(isLoopbackRegistry("localhost.example.com"), false);
  assertEquals(isLoopbackRegistry("ghcr.io"), false);
});

Deno.test("looksLikeReference - local names never look like references", () => {
  assertEquals(looksLikeReference("deps"), false);
  assertEquals(looksLikeReference("my-env_1.2"), false);
  assertEquals(looksLikeReference("localhost:5000/x:1"), true);
  assertEquals(looksLikeReference("env:v1"), true);
  assertEquals(looksLikeReference(`x@${D}`), true);
});
