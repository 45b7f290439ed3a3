#!/usr/bin/env bash
# The project's test command (README "Run the tests"). Installs what is
# missing, then builds every test once and runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."

# A fixed target dir outside the clone lets CI and repeated runs reuse builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trigflow/target}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (once)..." >&2
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --no-fail-fast "$@"
# nextest does not run doc tests.
cargo test --workspace --doc --quiet
