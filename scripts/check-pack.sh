#!/usr/bin/env bash
# Checks the promise that `npm pack` ships a prebuilt addon: builds one with
# prebuildify in a scratch copy of the repo, packs it, installs the tarball
# into an empty folder with no compiler, cmake or make on PATH, and opens a
# core from the installed package.
set -euo pipefail
# The installing user sets neither of these; CI does for its own build.
unset SWITCHBOARD_BUILD_FROM_SOURCE SWITCHBOARD_WERROR SWITCHBOARD_ADDON
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git -C "$src" ls-files -z | (cd "$src" && xargs -0 tar cf -) | (mkdir -p "$work/repo" && cd "$work/repo" && tar xf -)
cd "$work/repo"
npm ci --ignore-scripts --no-audit --no-fund >/dev/null
npx prebuildify --napi --strip -t "$(node -v | cut -c2-)" >/dev/null 2>&1
ls prebuilds/*/switchboard.node
tarball=$(npm pack --silent 2>/dev/null | tail -1)
echo "packed $tarball ($(tar tzf "$tarball" | grep -c .) files, prebuilt: $(tar tzf "$tarball" | grep prebuilds/ | tr '\n' ' '))"

# A PATH with node and npm but no compiler, cmake or make.
mkdir -p "$work/bin"
for t in node npm npx sh bash env git tar gzip cat mkdir rm cp mv ls uname sed grep head; do
  p=$(command -v "$t" 2>/dev/null) && ln -sf "$p" "$work/bin/$t"
done
mkdir -p "$work/app"
cd "$work/app"
echo '{"name":"app","version":"1.0.0","private":true}' > package.json
PATH="$work/bin" npm install --no-audit --no-fund "$work/repo/$tarball" >/dev/null
PATH="$work/bin" node -e '
const { Core } = require("switchboard");
const core = Core.open({ configText: "" }, { onLog: () => {} });
const r = core.submit("alice", JSON.stringify({ op: "msg", id: 1, to: "bob", data: "hi" }));
if (r.verdict !== "pass" || r.message.to !== "bob") throw new Error("unexpected result");
core.close();
console.log("installed package works without a compiler:", require.resolve("switchboard"));
'
