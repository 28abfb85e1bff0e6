#!/usr/bin/env bash
# Installs componentize-js from npm (the version pinned in package.json) and
# builds image_deny.wasm next to this script. Needs Node.js 18+ and npm.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "error: npm is missing (install Node.js 18+)" >&2; exit 1; }
# No lock file: the one npm writes lists only this platform's optional
# native packages, so `npm ci` elsewhere would refuse it.
[ -d node_modules/@bytecodealliance/componentize-js ] ||
    npm install --no-audit --no-fund --no-package-lock
node build.mjs
