#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what the tests
# need (cmake/clang to build llama.cpp, the judge; systemd for
# systemd-analyze; xllamacpp so the Ollama emulator really runs models),
# then runs formatting, lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v clang >/dev/null || need_apt+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
python3 -c "import xllamacpp" 2>/dev/null || python3 -m pip install --quiet xllamacpp
# The https test's TLS proxy (tests/support/tls_proxy.py) makes its CA with it.
python3 -c "import cryptography" 2>/dev/null || python3 -m pip install --quiet cryptography

# Fixtures live beside the repository unless told otherwise.
export KVANT_FIXTURES="${KVANT_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
export KVANT_OLLAMA_EMULATOR="${KVANT_OLLAMA_EMULATOR:-$(cd .. && pwd)/shared/ollama-emulator/ollama_emulator.py}"

# llama.cpp's own llama-perplexity and llama-imatrix judge kvant eval and
# kvant imatrix (built once into target/llama-tools/, ~10 minutes).
scripts/llama-tools.sh

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features fuzz -- -D warnings
cargo test --no-fail-fast -- --test-threads=2
# A short fuzzing run of every reader (the long one: scripts/fuzz.sh --seconds 600).
scripts/fuzz.sh --ci
