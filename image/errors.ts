/**
 * The error class of the image pipeline, with a `code` callers can switch on.
 *
 * @module
 */

/** What went wrong while reading, unpacking or converting an image. */
export type ImageErrorCode =
  /** The image reference cannot be parsed (`oci:DIR[:TAG]`, `docker-archive:FILE`, a registry). */
  | "invalid_reference"
  /** The image, tag, manifest or blob does not exist where the reference points. */
  | "not_found"
  /** A manifest, index or config is not valid JSON of the expected shape. */
  | "bad_manifest"
  /** A media type this pipeline does not know (a layer compression, an artifact). */
  | "unsupported_media_type"
  /** No manifest for this host's platform (linux/amd64) in an index. */
  | "no_platform"
  /** A blob's bytes do not match its digest or size. */
  | "digest_mismatch"
  /** A layer's tar stream is malformed (bad header checksum, truncated, bad number). */
  | "bad_layer"
  /** A layer entry would write outside the root (`..`, a symlinked parent, a link escaping). */
  | "unsafe_path"
  /** The image does not fit the disk (live files, inodes, or an expanding stream: a bomb). */
  | "too_large"
  /** The registry refused (auth, rate limit) or could not be reached; `cause` has the details. */
  | "registry"
  /** A host program (mkfs.ext4, debugfs) failed. */
  | "command_failed";

/** An error of the image pipeline; messages read "Cannot <action> <thing>: <why>". */
export class ImageError extends Error {
  /** Machine-readable reason. */
  readonly code: ImageErrorCode;

  /**
   * Creates the error.
   *
   * @param code What went wrong.
   * @param message A message the user can act on.
   * @param options `cause`: the underlying error, if any.
   */
  constructor(code: ImageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ImageError";
    this.code = code;
  }
}
