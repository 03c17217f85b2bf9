#!/usr/bin/env bash
# Render a contaudit report.html in headless Chromium and save a PNG screenshot.
#
# Usage:
#   scripts/screenshot_report.sh RUN_DIR|REPORT.html [OUT.png] [WIDTH] [HEIGHT]
#
#   RUN_DIR      a run directory holding report.html (from `contaudit report RUN_DIR`)
#   OUT.png      where to write the screenshot (default: next to report.html, report.png)
#   WIDTH        viewport width in CSS pixels (default 1280)
#   HEIGHT       viewport height (default 7000); the blank space below the page is
#                trimmed afterwards when Python with Pillow is available
#
# Needs Chromium (Debian: `apt-get update && apt-get install -y chromium`); set
# CHROMIUM=/path/to/binary to use another build. Nothing is fetched from the network:
# the report is self-contained and the browser runs with networking features off and
# a throwaway profile that is removed afterwards.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 64
fi

target=$1
if [[ -d "$target" ]]; then
  target="$target/report.html"
fi
if [[ ! -f "$target" ]]; then
  echo "screenshot_report.sh: no such report: $target (run \`contaudit report RUN_DIR\` first)" >&2
  exit 66
fi
html=$(cd "$(dirname "$target")" && pwd)/$(basename "$target")
out=${2:-"$(dirname "$html")/report.png"}
width=${3:-1280}
height=${4:-7000}

browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
  for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$candidate" >/dev/null 2>&1; then
      browser=$(command -v "$candidate")
      break
    fi
  done
fi
if [[ -z "$browser" ]]; then
  echo "screenshot_report.sh: Chromium not found; install it (apt-get install -y chromium) or set CHROMIUM" >&2
  exit 69
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars --force-device-scale-factor=1 \
  --user-data-dir="$profile" --window-size="${width},${height}" \
  --screenshot="$out_abs" "file://$html" >"$profile/chromium.log" 2>&1 || {
  echo "screenshot_report.sh: Chromium failed; its log:" >&2
  cat "$profile/chromium.log" >&2
  exit 70
}
if [[ ! -s "$out_abs" ]]; then
  echo "screenshot_report.sh: Chromium wrote no screenshot; its log:" >&2
  cat "$profile/chromium.log" >&2
  exit 70
fi

# Trim the uniform background below the end of the page (optional).
python=${PYTHON:-python3}
"$python" - "$out_abs" <<'EOF' 2>/dev/null || true
import sys
from PIL import Image, ImageChops
path = sys.argv[1]
img = Image.open(path).convert("RGB")
bg = Image.new("RGB", img.size, img.getpixel((img.width - 1, img.height - 1)))
box = ImageChops.difference(img, bg).getbbox()
if box:
    img.crop((0, 0, img.width, min(img.height, box[3] + 24))).save(path)
EOF

python_size=$(wc -c <"$out_abs")
echo "screenshot: $out_abs (${python_size} bytes)"
