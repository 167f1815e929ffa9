#!/usr/bin/env bash
# The entry script of a GPU bundle (tools/gpu-bundle.sh copies it to
# gpu-bundle/run.sh): unpacks gpu-bundle/bundle.tar.xz beside itself (into
# gpu-bundle/unpacked/, or $GPU_BUNDLE_UNPACK_DIR) and runs the bundle's
# gpu-check.sh with the arguments given:
#
#   bash gpu-bundle/run.sh OUTDIR
#
# tar -xJ needs xz; without it Python's tarfile unpacks the archive.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
archive=$here/bundle.tar.xz
dest=${GPU_BUNDLE_UNPACK_DIR:-$here/unpacked}
if [[ ! -f $archive ]]; then
  echo "run.sh: no $archive; make the bundle with tools/gpu-bundle.sh" >&2
  exit 2
fi
rm -rf "$dest"
mkdir -p "$dest"
if ! tar -xJf "$archive" -C "$dest" 2>/dev/null; then
  rm -rf "$dest" && mkdir -p "$dest"
  "${PYTHON:-python3}" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$archive" "$dest"
fi
exec bash "$dest/gpu-check.sh" "$@"
