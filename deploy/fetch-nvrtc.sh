#!/usr/bin/env bash
# Fetches NVRTC (NVIDIA's runtime CUDA compiler: libnvrtc.so.12 and its builtins, no GPU or
# driver needed) from the PyPI wheel nvidia-cuda-nvrtc-cu12==12.9.86, checks the wheel's sha256
# and unpacks the libraries under ${JOULE_HOME:-~/.cache/joule}/nvrtc/12.9.86/. A no-op when
# they are already there. Prints the directory to put on LD_LIBRARY_PATH.
#
#   export LD_LIBRARY_PATH="$(deploy/fetch-nvrtc.sh):${LD_LIBRARY_PATH:-}"
#   cargo test -p joule-engine --features cuda -- --ignored nvrtc
set -euo pipefail

VERSION=12.9.86
WHEEL_SPEC=nvidia-cuda-nvrtc-cu12==$VERSION
SHA256=210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4
DIR="${JOULE_HOME:-$HOME/.cache/joule}/nvrtc/$VERSION"

if [[ -f "$DIR/libnvrtc.so.12" && -f "$DIR/libnvrtc-builtins.so.12.9" ]]; then
  echo "$DIR"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching NVRTC $VERSION from the PyPI wheel $WHEEL_SPEC (about 90 MB) ..." >&2
python3 -m pip download --no-deps --only-binary=:all: --platform manylinux2010_x86_64 \
  --progress-bar on --disable-pip-version-check -d "$tmp" "$WHEEL_SPEC" >&2
wheel=$(ls "$tmp"/*.whl)
if ! echo "$SHA256  $wheel" | sha256sum --check --status; then
  echo "error: $(basename "$wheel") does not match sha256 $SHA256; not installed" >&2
  exit 1
fi
mkdir -p "$DIR.partial"
python3 - "$wheel" "$DIR.partial" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
want = ("libnvrtc.so.12", "libnvrtc-builtins.so.12.9")
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        name = os.path.basename(m)
        if name in want:
            with z.open(m) as src, open(os.path.join(out, name), "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
missing = [w for w in want if not os.path.exists(os.path.join(out, w))]
if missing:
    sys.exit(f"{wheel}: {missing} not inside")
PY
rm -rf "$DIR"
mv "$DIR.partial" "$DIR"
echo "$DIR"
