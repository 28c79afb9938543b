#!/usr/bin/env bash
# FlashInfer compiles each kernel on first use (minutes on a bare lease). This keeps the built
# libraries between leases: `save` packs every JIT-built .so into $OUT/fi_prebuilt.tar.xz, and
# `restore` unpacks .fi_prebuilt/fi_prebuilt.tar.xz (carried) into FlashInfer's AOT folder, which
# FlashInfer loads before it considers building (JitSpec.is_aot). Same wheel, same CUDA, same
# sm_90 on every lease, so a library built on one loads on the next.
# Usage on the lease, after the wheels are installed into $SITE (default /tmp/site):
#   bash scripts/gpu_prebuilt.sh restore;  ...;  bash scripts/gpu_prebuilt.sh save
set -uo pipefail
SITE=${SITE:-/tmp/site}
AOT_DIR="$SITE/flashinfer/data/aot"
case "${1:-}" in
  restore)
    archive=.fi_prebuilt/fi_prebuilt.tar.xz
    [ -f "$archive" ] || { echo "prebuilt: none carried"; exit 0; }
    mkdir -p "$AOT_DIR" && tar -C "$AOT_DIR" -xJf "$archive"
    echo "prebuilt: restored $(ls "$AOT_DIR" | wc -l) FlashInfer libraries"
    ;;
  save)
    staging=$(mktemp -d)
    # cached_ops/<name>/<name>.so -> <name>/<name>.so, the AOT folder's layout; keep what was
    # restored too, so the archive only grows.
    for so in "$HOME"/.cache/flashinfer/*/*/cached_ops/*/*.so "$AOT_DIR"/*/*.so; do
      [ -f "$so" ] || continue
      name=$(basename "$so" .so); mkdir -p "$staging/$name"; cp -n "$so" "$staging/$name/"
    done
    tar -C "$staging" -cJf "${OUT:-/tmp}/fi_prebuilt.tar.xz" .
    echo "prebuilt: saved $(ls "$staging" | wc -l) libraries," \
      "$(du -h "${OUT:-/tmp}/fi_prebuilt.tar.xz" | cut -f1) packed"
    ;;
  *) echo "usage: $0 restore|save" >&2; exit 2 ;;
esac
