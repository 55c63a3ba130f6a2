#!/usr/bin/env bash
# Checks the promise that the packed package works on a machine without a
# compiler: packs a scratch copy of the repo (prepack builds the prebuilt
# addon and sample modules, prepare compiles dist/), installs the tarball
# into an empty project with no compiler, cmake or make on PATH, then does
# what README.md's "Installing the package" says: `npx switchboard init`,
# `npx switchboard`, and one message each way through the default chain
# (bob gets alice's message, the echo module answers), then SIGTERM, exit 0.
set -euo pipefail
# The installing user sets none of these; CI does for its own build.
unset SWITCHBOARD_BUILD_FROM_SOURCE SWITCHBOARD_WERROR SWITCHBOARD_ADDON MESIBO_CONF
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
npx_pid=
cleanup() {
  if [ -n "$npx_pid" ] && kill -0 "$npx_pid" 2>/dev/null; then kill -TERM -- "-$npx_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

git -C "$src" ls-files -z | (cd "$src" && xargs -0 tar cf -) | (mkdir -p "$work/repo" && cd "$work/repo" && tar xf -)
cd "$work/repo"
npm ci --ignore-scripts --no-audit --no-fund >/dev/null
npm pack --silent >"$work/pack.log" 2>&1 || { cat "$work/pack.log" >&2; exit 1; }
tarball=$(ls switchboard-*.tgz)
platform="$(node -p 'process.platform + "-" + process.arch')"
listing=$(tar tzf "$tarball")
for f in "prebuilds/$platform/switchboard.node" "prebuilds/$platform/modules/mesibo_mod_filter.so" "prebuilds/$platform/modules/mesibo_mod_echo.so" dist/cli.js dist/index.js LICENSE; do
  grep -qx "package/$f" <<<"$listing" || { echo "check-pack: $tarball lacks $f" >&2; exit 1; }
done
echo "packed $tarball ($(grep -c . <<<"$listing") files, $(du -k "$tarball" | cut -f1) KiB; prebuilt: $(grep prebuilds/ <<<"$listing" | grep -v '/$' | sed 's|package/||' | tr '\n' ' '))"

# A PATH with node and npm but no compiler, cmake or make.
mkdir -p "$work/bin"
for t in node npm npx sh bash env git tar gzip cat mkdir rm cp mv ls uname sed grep head tail sleep curl ps setsid tee cut du wc seq; do
  p=$(command -v "$t" 2>/dev/null) && ln -sf "$p" "$work/bin/$t"
done
for t in gcc g++ cc c++ make cmake clang; do
  if PATH="$work/bin" command -v "$t" >/dev/null 2>&1; then echo "check-pack: $t is still on the PATH" >&2; exit 1; fi
done
mkdir -p "$work/app"
cd "$work/app"
echo '{"name":"app","version":"1.0.0","private":true}' >package.json
# ws: the client SDK's optional peer, which a Node client installs itself.
PATH="$work/bin" npm install --no-audit --no-fund "$work/repo/$tarball" ws >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; exit 1; }
echo "installed without a compiler: $(ls node_modules | wc -l) packages in node_modules ($(du -sk node_modules | cut -f1) KiB)"
[ ! -e node_modules/cmake-js ] || { echo "check-pack: cmake-js was installed; it is for source builds only (devDependency)" >&2; exit 1; }

PATH="$work/bin" npx switchboard --version
PATH="$work/bin" npx switchboard init | tee "$work/init.log"
token=$(sed -n 's/^app_token (for POST \/api): //p' "$work/init.log")
grep -q '^module_dir = ./node_modules/switchboard/prebuilds/' mesibo.conf || { echo "check-pack: init did not point module_dir at the prebuilt modules:" >&2; cat mesibo.conf >&2; exit 1; }
# As written, on a free port: CI's machine may run other servers.
sed -i 's/^listen = 127.0.0.1:5222$/listen = 127.0.0.1:0/' mesibo.conf
# Its own process group, so cleanup can end all of it if a step fails.
PATH="$work/bin" setsid npx switchboard >"$work/server.log" 2>&1 &
npx_pid=$!
port=
for _ in $(seq 1 200); do
  port=$(sed -n 's/.*server\.listening url=ws:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/server.log")
  [ -n "$port" ] && break
  kill -0 "$npx_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  cat "$work/server.log" >&2
  echo "check-pack: the installed server did not start" >&2
  exit 1
fi
grep 'server.listening' "$work/server.log"
grep -q 'server.listening .*modules=filter,echo ' "$work/server.log" || { echo "check-pack: the default chain did not load" >&2; exit 1; }

cat >chat.js <<'EOF'
const WebSocket = require('ws');
const { SwitchboardClient } = require('switchboard/client');
const [port, appToken] = process.argv.slice(2);
const api = async (body) => (await fetch(`http://127.0.0.1:${port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${appToken}` }, body: JSON.stringify(body) })).json();
(async () => {
  const url = `ws://127.0.0.1:${port}/`;
  const [a, b] = [await api({ op: 'useradd', address: 'alice' }), await api({ op: 'useradd', address: 'bob' })];
  const alice = new SwitchboardClient({ url, token: a.token, WebSocket });
  const bob = new SwitchboardClient({ url, token: b.token, WebSocket });
  const got = (client, from) => new Promise((resolve) => client.on('message', (m) => m.from === from && resolve(m.text)));
  const bobGot = got(bob, 'alice');
  const aliceGot = got(alice, 'echo');
  await Promise.all([alice.connect(), bob.connect()]);
  alice.send('bob', 'hello bob');
  alice.send('echo', 'ping');
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no message within 10 s')), 10_000));
  console.log(`bob got "${await Promise.race([bobGot, timeout])}" from alice`);
  console.log(`alice got "${await Promise.race([aliceGot, timeout])}" from echo`);
  alice.close();
  bob.close();
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
EOF
PATH="$work/bin" node chat.js "$port" "$token" | tee "$work/chat.log"
grep -qx 'bob got "hello bob" from alice' "$work/chat.log"
grep -qx 'alice got "echo: ping" from echo' "$work/chat.log"

# npx does not pass SIGTERM on: it goes to the server itself (npx -> sh ->
# node), as a service manager would send it; npx exits with the server's code.
descendants() { local c; for c in $(ps -o pid= --ppid "$1"); do echo "$c"; descendants "$c"; done; }
server=
for p in $(descendants "$npx_pid"); do
  if ps -o args= -p "$p" | grep -q '^node .*switchboard'; then server=$p; break; fi
done
[ -n "$server" ] || { ps -o pid,args --ppid "$npx_pid" >&2; echo "check-pack: cannot find the server process under npx" >&2; exit 1; }
kill -TERM "$server"
set +e
wait "$npx_pid"
code=$?
set -e
npx_pid=
[ "$code" -eq 0 ] || { cat "$work/server.log" >&2; echo "check-pack: the installed server exited $code after SIGTERM, expected 0" >&2; exit 1; }
echo "installed package: init, start, default chain, one message each way, SIGTERM -> exit 0, all without a compiler"
