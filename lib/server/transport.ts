/**
 * Which uWebSockets.js the server got. The package in use carries native
 * binaries for Node.js 16, 18 and 20 only; on any other version (or with
 * UWS_USE_FALLBACK set) it quietly loads a pure-JavaScript fallback whose
 * `publish` throws, so a server on it would accept connections and then fail
 * every message. Start-up refuses it instead (E_NODE_UNSUPPORTED).
 */
import { SwitchboardError } from '../errors';

/** Node.js major versions uWebSockets.js has native binaries for (binaries/uws_<platform>_<arch>_<abi>.node). */
export const UWS_NODE_MAJORS = [16, 18, 20] as const;

/**
 * True when `uws` is the native binding. The binding's functions are
 * N-API functions, which print as `[native code]`; the fallback's `App` is
 * ordinary JavaScript. This holds however the fallback was chosen (missing
 * binary, failed dlopen, the environment flag), unlike checking the Node
 * version or a file on disk.
 */
export function uwsIsNative(uws: unknown): boolean {
  const app = (uws as { App?: unknown } | null)?.App;
  return typeof app === 'function' && /\{\s*\[native code\]\s*\}\s*$/.test(Function.prototype.toString.call(app));
}

/** Throws E_NODE_UNSUPPORTED when `uws` is the JavaScript fallback. */
export function requireNativeUws(uws: unknown, env: NodeJS.ProcessEnv = process.env, version = process.version): void {
  if (uwsIsNative(uws)) return;
  const cause = env.UWS_USE_FALLBACK
    ? 'UWS_USE_FALLBACK is set in the environment: unset it'
    : `it has no native binary for Node.js ${version} (${process.platform}-${process.arch}): run Switchboard on Node.js 20 (the version it is tested on; uWebSockets.js also has binaries for ${UWS_NODE_MAJORS.slice(0, -1).join(' and ')})`;
  throw new SwitchboardError('E_NODE_UNSUPPORTED', `uWebSockets.js loaded its JavaScript fallback, which cannot deliver messages; ${cause}`);
}
