#!/usr/bin/env bash
# HTTP/2 versus HTTP/1.1 latency through `bearer-guard gateway`, one request at a
# time (h2load -c1 -m1), on 127.0.0.1 only. Catches the delayed-ACK stall: without
# TCP_NODELAY on the accepted sockets every HTTP/2 response waited ~40 ms for the
# client's ACK (26-85 req/s against thousands over HTTP/1.1). The script fails
# when HTTP/2 reaches less than MIN_RATIO of HTTP/1.1's rate.
#
#   bash benches/gateway_h2.sh               # ~20 s after the build
#   REQUESTS=2000 bash benches/gateway_h2.sh
#
# The upstream is the bundled authorization server (`bearer-guard authz-server`,
# its JWKS document, HTTP/1.1 keep-alive); the gateway has one public route, so
# this is transport alone. h2load comes from Debian's nghttp2-client (installed
# when missing, as root). Knobs (env): REQUESTS (1000), UP_PORT (19280),
# GW_PORT (19281), MIN_RATIO (0.25), PROFILE (debug; release for real figures),
# NO_BUILD=1 to use the binary already built.

set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-1000}
UP_PORT=${UP_PORT:-19280}
GW_PORT=${GW_PORT:-19281}
MIN_RATIO=${MIN_RATIO:-0.25}
PROFILE=${PROFILE:-debug}

if ! command -v h2load >/dev/null 2>&1; then
  echo "== apt-get install nghttp2-client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
if [ -z "${NO_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --quiet --release --features cli --bin bearer-guard
  else
    cargo build --quiet --features cli --bin bearer-guard
  fi
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/bearer-guard

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN" authz-server --listen "127.0.0.1:$UP_PORT" >"$work/as.log" 2>&1 &
pids+=($!)
cat >"$work/gateway.toml" <<EOF
listen = "127.0.0.1:$GW_PORT"
upstream = "http://127.0.0.1:$UP_PORT"
[[issuer]]
issuer = "http://127.0.0.1:$UP_PORT"
audiences = ["https://api.example.com"]
[[route]]
path = "/"
public = true
EOF
BEARER_GUARD_LOG=warn "$BIN" gateway --config "$work/gateway.toml" 2>"$work/gw.log" &
pids+=($!)
url="http://127.0.0.1:$GW_PORT/jwks"
for _ in $(seq 100); do
  curl -fs -o /dev/null "$url" && break
  sleep 0.1
done
curl -fs -o /dev/null --http2-prior-knowledge "$url"

rate() { # h2load's "finished in ..., N req/s" figure
  h2load "$@" -n "$REQUESTS" -c1 -m1 "$url" | awk '/^finished in/ { print $4 }'
}
h1=$(rate --h1)
h2=$(rate)
echo "sequential requests/s through the gateway ($PROFILE build): HTTP/1.1 $h1, HTTP/2 (h2c) $h2"
awk -v h1="$h1" -v h2="$h2" -v min="$MIN_RATIO" 'BEGIN {
  ratio = h2 / h1
  printf "HTTP/2 / HTTP/1.1 = %.2f (at least %.2f expected)\n", ratio, min
  exit (ratio < min)
}'
