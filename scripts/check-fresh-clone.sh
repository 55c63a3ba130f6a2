#!/usr/bin/env bash
# Checks README.md's promise to a new user: in a fresh clone, its first
# command (`npm install && npm start`, read from the README itself) builds
# everything and serves on the embedded defaults; the README's two-user
# example (test/readme-example.js, also read from the README) answers as the
# page says; SIGTERM to the server stops it and the command exits 0.
set -euo pipefail
# A new user sets none of these; CI does for its own build.
unset SWITCHBOARD_BUILD_FROM_SOURCE SWITCHBOARD_WERROR SWITCHBOARD_ADDON MESIBO_CONF
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if curl -s -o /dev/null --max-time 2 http://127.0.0.1:5222/health; then
  echo "check-fresh-clone: something already listens on 127.0.0.1:5222, the README's port; stop it first" >&2
  exit 1
fi

# What a user gets from `git clone`: committed files only.
git clone -q "$src" "$work/clone"
cd "$work/clone"
cmd=$(node -e 'const e = require("./test/readme-example.js"); console.log(e.readmeExample(require("fs").readFileSync("README.md", "utf8")).firstCommand)')
echo "running the README's first command in a fresh clone: $cmd"
start=$(date +%s)
# Its own process group, so cleanup can end all of it if a step fails.
setsid bash -c "$cmd" >"$work/out.log" 2>&1 &
pid=$!

until curl -sf --max-time 2 http://127.0.0.1:5222/health >/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$work/out.log" >&2
    echo "check-fresh-clone: \`$cmd\` ended before the server answered /health" >&2
    exit 1
  fi
  if [ $(($(date +%s) - start)) -gt 900 ]; then
    tail -50 "$work/out.log" >&2
    echo "check-fresh-clone: no answer on /health after 15 minutes" >&2
    exit 1
  fi
  sleep 1
done
echo "serving after $(($(date +%s) - start)) s: $(curl -s http://127.0.0.1:5222/health)"
grep 'server.listening' "$work/out.log"

node test/readme-example.js

# The server is npm start's grandchild (npm -> sh -> node server.js); npm
# does not pass SIGTERM on, so it goes to the server, as a service manager
# would send it, and npm start then exits with the server's code.
descendants() { local c; for c in $(ps -o pid= --ppid "$1"); do echo "$c"; descendants "$c"; done; }
server=
for p in $(descendants "$pid"); do
  if ps -o args= -p "$p" | grep -q '^node server.js'; then server=$p; break; fi
done
[ -n "$server" ] || { echo "check-fresh-clone: cannot find the server process under $pid" >&2; exit 1; }
kill -TERM "$server"
set +e
wait "$pid"
code=$?
set -e
tail -3 "$work/out.log"
if [ "$code" -ne 0 ]; then
  echo "check-fresh-clone: \`$cmd\` exited $code after SIGTERM, expected 0" >&2
  exit 1
fi
leftover=$(ls data)
[ "$leftover" = "switchboard.db" ] || { echo "check-fresh-clone: data/ holds $leftover after a clean stop, expected switchboard.db alone" >&2; exit 1; }
echo "fresh clone: \`$cmd\` served, the README example answered, SIGTERM -> exit 0"
