#!/usr/bin/env bash
# Render a leaf HTML report in headless Chromium and save a PNG screenshot, or time it.
#   scripts/screenshot_report.sh REPORT.html OUT.png [WIDTHxHEIGHT] [QUERY]
#   scripts/screenshot_report.sh --probe REPORT.html
# The first form saves a screenshot of the top of the page; QUERY presets the report's filters,
# e.g. 'q=syn-00003' or 'level=response&verify=rejected&page=2' (headless screenshots of a
# scrolled page come out blank, so show a sample by filtering, not by #anchor). --probe loads REPORT.html?probe, which times the first render, a
# filter change and a jump to the last page inside the page, and prints those timings (JSON)
# and the wall time of the whole browser run.
# Needs the Debian package `chromium` (apt-get install -y chromium). Nothing is fetched from
# the network: background networking, updates, sync and QUIC are off and a fresh profile is used.
set -euo pipefail
usage="usage: screenshot_report.sh REPORT.html OUT.png [WIDTHxHEIGHT] [QUERY] | --probe REPORT.html"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
  echo "chromium not found; install it with: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
       --disable-component-update --disable-sync --no-first-run --disable-quic
       --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$profile")

if [[ "${1:-}" == "--probe" ]]; then
  report=${2:?$usage}
  start=$(date +%s.%N)
  dom=$("$browser" "${flags[@]}" --window-size=1280,2000 --dump-dom \
        "file://$(realpath "$report")?probe" 2>/dev/null)
  end=$(date +%s.%N)
  probe=$(grep -o "data-probe=\"[^\"]*\"" <<<"$dom" | sed -e 's/^data-probe="//' -e 's/"$//' \
          -e 's/&quot;/"/g')
  [[ -n "$probe" ]] || { echo "the page did not finish rendering" >&2; exit 1; }
  echo "$probe"
  echo "browser wall time (start, load, render, exit): $(awk "BEGIN{printf \"%.2f\", $end - $start}") s"
  exit 0
fi

report=${1:?$usage}
out=${2:?$usage}
size=${3:-1280x2000}
query=${4:-}
url="file://$(realpath "$report")${query:+?$query}"
"$browser" "${flags[@]}" --window-size="${size/x/,}" --virtual-time-budget=5000 \
  --screenshot="$(realpath -m "$out")" "$url" >/dev/null 2>&1
test -s "$out"
echo "wrote $out"
