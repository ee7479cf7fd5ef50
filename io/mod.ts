/**
 * Bytes and streams, for both sides of the VM (the host's servers and the guest agent): joining
 * byte arrays, writing a whole buffer, a buffered reader, the newline-delimited framing of the
 * JSON-line protocols, and tar archives (image layers, asset bundles). No protocol knowledge, no I/O of its own.
 *
 * @module
 */

export {
  type ByteSink,
  type ByteSource,
  concatBytes,
  readAll,
  writeAll,
  writeAndClose,
} from "./bytes.ts";
export { BufferedReader, type BufferedReaderOptions } from "./buffered_reader.ts";
export {
  BLOCK as TAR_BLOCK,
  encodeHeader as encodeTarHeader,
  padding as tarPadding,
  type TarEntry,
  type TarEntryType,
  TarError,
  TarReader,
  type TarReaderOptions,
} from "./tar.ts";
export {
  type DecodedLine,
  encodeLine,
  LineDecoder,
  type LineDecoderOptions,
  type LineOverflow,
  LineTooLongError,
} from "./lines.ts";
