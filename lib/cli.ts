#!/usr/bin/env node
/**
 * The `switchboard` command (package.json "bin"; `node server.js` runs the
 * same code): start the server, or write a starter configuration with
 * `init`. Exit codes: 0 after a clean stop, 1 when start-up fails (one line
 * on stderr with the error code), 2 for a command line it cannot read
 * (the line says why, then the usage).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SwitchboardError } from './errors';
import { Server } from './server/server';

const root = path.join(__dirname, '..');

export const USAGE = `Usage:
  switchboard [--config FILE]   start the server with FILE (default: $MESIBO_CONF, else ./mesibo.conf)
  switchboard init [--force]    write a starter mesibo.conf and a data folder in this folder
                                (--force replaces an existing mesibo.conf)
  switchboard --help            show this text
  switchboard --version         print the version

SIGTERM or SIGINT stops the server cleanly (exit 0). SIGHUP reloads the
configuration file: what can change while running is applied, the log line
server.reloaded names what needs a restart, and a file with an error is
refused (server.reload_failed) while the server runs on unchanged.
Settings: docs/config.md. Running it as a service: docs/operations.md.
`;

function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
}

/** Where this installation's compiled sample modules are: a source build, else the prebuilt ones for this platform. */
export function sampleModuleDir(): string | null {
  const candidates = [path.join(root, 'build', 'modules'), path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'modules')];
  return candidates.find((d) => fs.existsSync(path.join(d, 'mesibo_mod_filter.so')) && fs.existsSync(path.join(d, 'mesibo_mod_echo.so'))) ?? null;
}

function starterConfig(moduleDir: string | null, appToken: string): string {
  const modules =
    moduleDir === null
      ? `# No compiled sample modules were found in this installation, so the chain
# is empty. Build them (npx cmake-js compile in the package) and add, e.g.:
#   module_dir = ${path.join(root, 'build', 'modules')}
#   module echo {
#   \taddress = echo
#   }
`
      : `# The sample modules that came with switchboard (their source: modules/ in
# the package). Your own go in a folder of your own: see docs/modules.md.
module_dir = ${moduleDir}

# Drop messages that contain one of these words (case-insensitive).
module filter {
\tblocked_words = spam, scam
}

# Answer messages sent to the user "echo" with "echo: <text>".
module echo {
\taddress = echo
}
`;
  return `# Written by \`switchboard init\`. Every setting: docs/config.md in the package.
# It listens on loopback only and keeps its data in a SQLite file under ./data.
listen = 127.0.0.1:5222
data_dir = ./data
# The backend API (POST /api) needs this token: Authorization: Bearer <token>.
app_token = ${appToken}

${modules}`;
}

/** `switchboard init`: returns the exit code. */
export function init(cwd: string, force: boolean, out: (s: string) => void, err: (s: string) => void): number {
  const file = path.join(cwd, 'mesibo.conf');
  if (fs.existsSync(file) && !force) {
    const e = new SwitchboardError('E_INIT_EXISTS', `${file} already exists; keep it, or run \`switchboard init --force\` to replace it with the starter configuration`);
    err(`switchboard: ${e.message} [${e.code}]\n`);
    return 1;
  }
  const moduleDir = sampleModuleDir();
  // Relative to the config's folder, so the folder can be moved along with
  // its node_modules; absolute when the package lives elsewhere (npx, global).
  const rel = moduleDir && path.relative(cwd, moduleDir);
  const shown = rel && !rel.startsWith('..') ? `./${rel}` : moduleDir;
  const token = crypto.randomBytes(18).toString('base64url');
  fs.writeFileSync(file, starterConfig(shown, token));
  fs.mkdirSync(path.join(cwd, 'data'), { recursive: true });
  out(`wrote ${file} and ${path.join(cwd, 'data')}${path.sep}\n`);
  out(`app_token (for POST /api): ${token}\n`);
  out(moduleDir ? `sample modules: ${moduleDir}\n` : 'no compiled sample modules found: the chain is empty (see the comment in mesibo.conf)\n');
  out('start it with: npx switchboard\n');
  return 0;
}

function configFile(flag: string | undefined, cwd: string, env: NodeJS.ProcessEnv): string {
  return path.resolve(cwd, flag ?? env.MESIBO_CONF ?? 'mesibo.conf');
}

/** Starts the server and resolves with the exit code once a signal has stopped it. */
async function serve(file: string, explicit: boolean): Promise<number> {
  if (!explicit && !fs.existsSync(file)) {
    const e = new SwitchboardError('E_CONFIG_READ', `${file}: no configuration file here; run \`npx switchboard init\` to write a starter one, or pass --config FILE`);
    process.stderr.write(`switchboard: cannot start: ${e.message} [${e.code}]\n`);
    return 1;
  }
  // The handlers go in before start-up: a signal between the "listening"
  // line and the end of start() would otherwise take Node's default (exit
  // at once, no drain). One that comes during start-up stops the server as
  // soon as it is up.
  let server: Server | null = null;
  let stopRequested: string | null = null;
  let finish: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => (finish = resolve));
  // Before the server is up there is no logger yet (a signal then only
  // changes what happens once start-up ends): one plain line on stderr.
  const signalled = (signal: string, action: string) =>
    server ? server.logger.event('server.signal', { signal, action }) : process.stderr.write(`switchboard: ${signal}: ${action}\n`);
  const stop = (signal: string) => {
    if (stopRequested) return;
    stopRequested = signal;
    if (!server) return;
    signalled(signal, 'stopping');
    server.stop().then(
      () => finish(0),
      (e) => {
        server!.logger.event('server.stop_failed', { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
        finish(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // A service manager's "reload" sends SIGHUP (Node's default would exit at
  // once, without the drain). Server.reload() logs its own outcome; a
  // refused config leaves the server as it was, so the rejection is done with.
  process.on('SIGHUP', () => {
    if (!server || stopRequested) return signalled('SIGHUP', stopRequested ? 'ignored: the server is stopping' : 'ignored: the server is still starting; send it again once it listens');
    signalled('SIGHUP', 'reloading the configuration');
    server.reload().catch(() => undefined);
  });
  try {
    server = await Server.start({ configFile: file });
  } catch (e) {
    const err = e as { message?: string; code?: string };
    process.stderr.write(`switchboard: cannot start: ${err.message ?? String(e)}${err.code ? ` [${err.code}]` : ''}\n`);
    return 1;
  }
  if (stopRequested) {
    const signal = stopRequested;
    stopRequested = null;
    stop(signal);
  }
  return done;
}

/**
 * Runs the command line `argv` (without node and the script) and resolves
 * with the exit code.
 */
export async function main(argv: string[], cwd = process.cwd(), env = process.env): Promise<number> {
  const out = (s: string) => process.stdout.write(s);
  const err = (s: string) => process.stderr.write(s);
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        force: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
      allowPositionals: true,
      strict: true,
    });
    const [command, ...rest] = parsed.positionals;
    if (command !== undefined && command !== 'init') throw new Error(`unknown command "${command}"`);
    if (rest.length > 0) throw new Error(`unexpected argument "${rest[0]}"`);
    if (parsed.values.force && command !== 'init') throw new Error('--force goes with init only');
    if (parsed.values.config !== undefined && command === 'init') throw new Error('init writes ./mesibo.conf; --config goes with starting the server');
  } catch (e) {
    // parseArgs' own text for an unknown option is a paragraph about "--".
    const unknown = (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && /'([^']+)'/.exec((e as Error).message);
    err(`switchboard: ${unknown ? `unknown option "${unknown[1]}"` : (e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    out(USAGE);
    return 0;
  }
  if (parsed.values.version) {
    out(`switchboard ${version()} (node ${process.version})\n`);
    return 0;
  }
  if (parsed.positionals[0] === 'init') return init(cwd, parsed.values.force === true, out, err);
  return serve(configFile(parsed.values.config, cwd, env), parsed.values.config !== undefined || env.MESIBO_CONF !== undefined);
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
