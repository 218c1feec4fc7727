#!/usr/bin/env bash
# Where the webview's video CPU goes: N VP8 streams (the moving test pattern, 30 fps) decoded by
# WebCodecs in WebKitGTK's MiniBrowser (the app's engine, with the app's no-DMA-BUF renderer),
# drawn (or not) in N tiles by each method of decode.html; CPU of the web process and of the UI
# process over 10 s after a 6 s warm-up. Run under a display:
#
#   xvfb-run -a -s "-screen 0 1280x800x24" bash tests/app/webcodecs/bench.sh [N] [modes...]
#
# Modes: none (decode, close the frame), copy (decode + VideoFrame.copyTo, the I420 bytes),
# 2d (drawImage into a canvas of the frame's size, shown CSS-scaled to 596 px), 2d-noscale (the
# same shown at its own size), 2dfit (drawImage scaled into a 596 px canvas), yuvjs (copyTo +
# I420->RGBA in JS + putImageData), gl (WebGL texImage2D(VideoFrame)), glyuv (three luminance
# textures + a YUV->RGB shader). Each at 640x360 (500 kbit/s) and 320x180 (150 kbit/s).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
N="${1:-4}"; shift || true
MODES=("${@:-none copy 2d 2d-noscale}")
MB=/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser
[ -x "$MB" ] || { echo "no $MB (Debian libwebkit2gtk-4.1-0 ships it)"; exit 1; }
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
cp "$HERE/decode.html" "$WORK/"
(cd "$ROOT" && cargo run -q -p hum-media --example vp8_ivf -- "$WORK/p360.ivf" 640x360 300 500 \
  && cargo run -q -p hum-media --example vp8_ivf -- "$WORK/p180.ivf" 320x180 300 150) >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 & HTTP=$!
trap 'kill $HTTP 2>/dev/null; rm -rf "$WORK"' EXIT
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
for mode in ${MODES[*]}; do
  for file in p360.ivf p180.ivf; do
    extra=""; m="$mode"
    [ "$mode" = "2d-noscale" ] && { m=2d; extra="&css=0"; }
    WEBKIT_DISABLE_DMABUF_RENDERER=1 "$MB" "http://127.0.0.1:$PORT/decode.html?mode=$m&n=$N&file=$file$extra" \
      >/dev/null 2>&1 & ui=$!
    sleep 6
    web=$(pgrep -P "$ui" -f WebKitWebProcess | head -1 || true)
    if [ -z "$web" ]; then echo "$mode $file: no web process"; kill "$ui"; continue; fi
    a=$(ticks "$web"); au=$(ticks "$ui"); sleep 10; b=$(ticks "$web"); bu=$(ticks "$ui")
    printf '%-10s %-9s x%s: web process %3d %%, UI process %3d %% of one core\n' \
      "$mode" "${file%.ivf}" "$N" $(( (b - a) / 10 )) $(( (bu - au) / 10 ))
    kill "$ui" 2>/dev/null; wait "$ui" 2>/dev/null || true
  done
done
