#!/usr/bin/env bash
# Builds llama.cpp's own `llama-perplexity` and `llama-imatrix`, the judges of
# `kvant eval` and `kvant imatrix` (tests/eval_stats.rs, tests/imatrix_llama.rs).
#
# The llama.cpp inside the `llama-cpp-sys-2` crate ships without tools/, so the
# tools come from the llama.cpp vendored in llama-cpp-python's source
# distribution (PyPI, fetched with pip): a complete llama.cpp tree. Only those
# two targets are built (Release, CPU only, no curl/openssl, no tests, examples
# or server) and cached in target/llama-tools/; a second run finds
# target/llama-tools/bin/{llama-perplexity,llama-imatrix} and does nothing.
# Tests find the binaries through KVANT_LLAMA_TOOLS (default target/llama-tools/bin);
# KVANT_LLAMA_TOOLS_BUILD moves the whole cache elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

SDIST_VERSION="0.3.36"
root="${KVANT_LLAMA_TOOLS_BUILD:-$(pwd)/target/llama-tools}"
bin="$root/bin"
if [ -x "$bin/llama-perplexity" ] && [ -x "$bin/llama-imatrix" ]; then
  exit 0
fi
mkdir -p "$root/download"

sdist="$root/download/llama_cpp_python-$SDIST_VERSION.tar.gz"
if [ ! -e "$sdist" ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: \
    -d "$root/download" "llama-cpp-python==$SDIST_VERSION"
fi
src="$root/src/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
if [ ! -e "$src/tools/perplexity/perplexity.cpp" ]; then
  mkdir -p "$root/src"
  tar -xzf "$sdist" -C "$root/src"
fi

cmake -S "$src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF >"$root/configure.log"
nice cmake --build "$root/build" --config Release -j "$(nproc)" \
  --target llama-perplexity llama-imatrix >"$root/build.log"

mkdir -p "$bin"
for tool in llama-perplexity llama-imatrix; do
  cp "$root/build/bin/$tool" "$bin/$tool.tmp"
  mv "$bin/$tool.tmp" "$bin/$tool"
done
