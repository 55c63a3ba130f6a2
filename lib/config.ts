/** The mesibo.conf parser (C++), exposed for tools and tests. */
import { SwitchboardError } from './errors';
import { native, type NativeConfig } from './native';

export type ParsedConfig = NativeConfig;

/** Parses a config file, or config text (`file` then only labels errors). Throws SwitchboardError with an E_CONFIG_* code, file and line. */
export function parseConfig(src: { file: string } | { text: string; file?: string; dir?: string }): ParsedConfig {
  try {
    return native.parseConfig(src);
  } catch (e) {
    throw SwitchboardError.from(e);
  }
}
