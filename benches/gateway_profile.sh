#!/usr/bin/env bash
# Where a proxied request's time goes in `bearer-guard gateway`, on 127.0.0.1:
# the bundled authorization server, an upstream nginx answering a small JSON
# body, nginx as a plain proxy, and the gateway (one worker thread, pinned to
# $SERVER_CPU) with gateway_nginx.sh's routes (`/public`, and `/api` validating
# one reused RS256 token). wrk (-t1 -c32) drives both proxies from $CLIENT_CPU.
#
#   bash benches/gateway_profile.sh                      # req/s of both, ratio
#   PROFILE=perf bash benches/gateway_profile.sh         # + perf record of the gateway
#                                                        #   and of the nginx worker
#   PROFILE=callgrind bash benches/gateway_profile.sh    # both proxies under callgrind
#
# perf: `perf-gateway-<mode>.data` and `perf-nginx-<mode>.data` in $OUT; read the
# kernel/user split with `perf report -i FILE --sort dso` and the symbols with
# `--sort symbol`. callgrind: each proxy (nginx as one process, `master_process
# off`, so its worker is the counted one) is warmed by one wrk run, its counts
# zeroed, and dumped after the measured run to `callgrind-<mode>.out.<n>`
# (`callgrind-nginx-<mode>.out.<n>`) in $OUT; printed: that dump's total over
# the requests wrk completed, the user-space instructions per request
# (`callgrind_annotate --inclusive=yes FILE`, divided by the same number, is
# where they go). The kernel's share (the same four socket calls a request for
# both) is not counted. Instruction counts do not move with the machine's other
# load; req/s under callgrind is ~50x lower and means nothing.
#
# Knobs (env): MODES ("public validating"), DURATION (s, 8), PROFILE (none, perf,
# callgrind), OUT (.), SERVER_CPU (0), CLIENT_CPU (1), BASE_PORT (19480; uses 4),
# CARGO_TARGET_DIR (target), NO_BUILD=1 to use the binary already built.
# (A `cargo bench` into the same target directory rebuilds the binary without
# LTO: build the release one again after it.)

set -euo pipefail

MODES=${MODES:-"public validating"}
DURATION=${DURATION:-8}
PROFILE=${PROFILE:-none}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-19480}
AS_PORT=$BASE_PORT UP_PORT=$((BASE_PORT + 1)) NGINX_PORT=$((BASE_PORT + 2)) GW_PORT=$((BASE_PORT + 3))
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$(cd "${OUT:-.}" && pwd)
BG=$TARGET/release/bearer-guard
AUD="https://api.bench.invalid"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bg-profile.XXXXXX")
PIDS=()

die() {
    printf 'gateway_profile.sh: %s\n' "$*" >&2
    exit 1
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in taskset curl jq wrk; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y $tool)"
done
[[ -x /usr/sbin/nginx ]] || die "nginx is required (apt-get install -y nginx)"
case $PROFILE in
none) ;;
perf) command -v perf >/dev/null || die "perf is required" ;;
callgrind) command -v valgrind >/dev/null || die "valgrind is required" ;;
*) die "PROFILE is none, perf or callgrind, not $PROFILE" ;;
esac
if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
        --features cli --bin bearer-guard)
fi
[[ -x $BG ]] || die "missing $BG (build first, or unset NO_BUILD)"

wait_for() { # wait_for URL: until it answers (any status)
    local i
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "$1 never answered"
}

cat >"$WORK/as.toml" <<EOF
audiences = ["$AUD"]
access_token_lifetime_secs = 3600
signing_algorithm = "RS256"
[[client]]
id = "bench"
secret = "bench-secret"
scopes = ["read:data"]
EOF
taskset -c "$CLIENT_CPU" "$BG" authz-server --listen "127.0.0.1:$AS_PORT" \
    --config "$WORK/as.toml" >"$WORK/as.out" 2>"$WORK/as.err" &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do
    grep -q '^  jwks ' "$WORK/as.out" 2>/dev/null && break
    sleep 0.1
done
ISS=$(sed -n 's/^bearer-guard authz-server: issuer //p' "$WORK/as.out")
JWKS_URL=$(awk '$1 == "jwks" { print $2 }' "$WORK/as.out")
[[ -n $ISS && -n $JWKS_URL ]] || die "no issuer banner: $(cat "$WORK/as.out" "$WORK/as.err")"
TOKEN=$(curl -sf -u bench:bench-secret -d grant_type=client_credentials \
    -d scope=read:data "$ISS/token" | jq -er .access_token)

nginx_conf() { # nginx_conf NAME BODY [MAIN]: MAIN, directives of the main context
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/nginx.conf" <<EOF
worker_processes 1;
${3:-}
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1;
    proxy_temp_path $WORK/$1;
    fastcgi_temp_path $WORK/$1;
    uwsgi_temp_path $WORK/$1;
    scgi_temp_path $WORK/$1;
    keepalive_requests 1000000;
    $2
}
EOF
}
nginx_conf upstream "
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { default_type application/json; return 200 '{\"data\":[1,2,3]}'; }
    }"
nginx_conf proxy "
    upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }" "$([[ $PROFILE == callgrind ]] && echo 'master_process off;')"
taskset -c "$CLIENT_CPU" /usr/sbin/nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
PIDS+=($!)
NGINX_WRAP=()
if [[ $PROFILE == callgrind ]]; then
    NGINX_WRAP=(valgrind -q --tool=callgrind --dump-instr=no
        "--callgrind-out-file=$OUT/callgrind-nginx-${MODES// /-}.out")
fi
taskset -c "$SERVER_CPU" "${NGINX_WRAP[@]}" /usr/sbin/nginx -c "$WORK/proxy/nginx.conf" \
    -e "$WORK/proxy/error.log" &
NGINX=$!
PIDS+=("$NGINX")

cat >"$WORK/gw.toml" <<EOF
listen = "127.0.0.1:$GW_PORT"
upstream = "http://127.0.0.1:$UP_PORT"
[limits]
max_connections = 4096
[[issuer]]
issuer = "$ISS"
jwks_uri = "$JWKS_URL"
audiences = ["$AUD"]
[[route]]
path = "/public"
public = true
[[route]]
path = "/api"
scopes_all = ["read:data"]
EOF
WRAP=()
if [[ $PROFILE == callgrind ]]; then
    WRAP=(valgrind -q --tool=callgrind --dump-instr=no
        "--callgrind-out-file=$OUT/callgrind-${MODES// /-}.out")
    [[ $MODES != *" "* ]] || die "PROFILE=callgrind profiles one mode at a time (MODES=public)"
fi
BEARER_GUARD_LOG=warn taskset -c "$SERVER_CPU" "${WRAP[@]}" "$BG" --worker-threads 1 \
    gateway --config "$WORK/gw.toml" 2>"$WORK/gw.log" &
GW=$!
PIDS+=("$GW")
wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "http://127.0.0.1:$NGINX_PORT/"
wait_for "http://127.0.0.1:$GW_PORT/public"
if [[ $PROFILE == callgrind ]]; then
    NGINX_WORKER=$NGINX # master_process off: one process
else
    NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")")
fi

run() { # run URL: req/s, and the total requests, from one wrk run
    taskset -c "$CLIENT_CPU" wrk -t1 -c32 -d"${DURATION}s" \
        -H "authorization: Bearer $TOKEN" "$1" |
        awk '/requests in/ { n = $1 } /^Requests\/sec:/ { r = $2 } END { print r, n }'
}
record() { # record PID FILE: perf for the next DURATION seconds, in the background
    perf record -F 1999 -g -p "$1" -o "$2" -- sleep "$DURATION" >/dev/null 2>&1 &
}

counted() { # counted NAME PID URL: one wrk run of URL, counted by callgrind in PID
    # Warmed first (connections, keys, the token cache), then counted from
    # zero over the measured run only: no startup, no first request.
    run "$3" >/dev/null
    callgrind_control --zero "$2" >/dev/null 2>&1
    local rps n dump
    read -r rps n < <(run "$3")
    callgrind_control --dump "$2" >/dev/null 2>&1
    dump=$(ls -t "$OUT/callgrind-$1.out".* | head -1)
    awk -v n="$n" -v f="$dump" -v name="$1" '/^(summary|totals):/ {
        printf "%s: %.0f instructions per request (%s)\n", name, $2 / n, f; exit }' "$dump" >&2
    echo "$rps $n"
}

printf '%-12s %12s %14s %8s %14s\n' mode "nginx req/s" "gateway req/s" ratio "gw requests"
for mode in $MODES; do
    case $mode in
    public) path=/public ;;
    validating) path=/api/data ;;
    *) die "MODES are public and validating, not $mode" ;;
    esac
    if [[ $PROFILE == callgrind ]]; then
        read -r n_rps _ < <(counted "nginx-$mode" "$NGINX_WORKER" "http://127.0.0.1:$NGINX_PORT$path")
        read -r g_rps g_n < <(counted "$mode" "$GW" "http://127.0.0.1:$GW_PORT$path")
    else
        [[ $PROFILE == perf ]] && record "$NGINX_WORKER" "$OUT/perf-nginx-$mode.data"
        read -r n_rps _ < <(run "http://127.0.0.1:$NGINX_PORT$path")
        [[ $PROFILE == perf ]] && sleep 1 # the nginx recording ends
        [[ $PROFILE == perf ]] && record "$GW" "$OUT/perf-gateway-$mode.data"
        read -r g_rps g_n < <(run "http://127.0.0.1:$GW_PORT$path")
    fi
    ratio=$(awk -v g="$g_rps" -v n="$n_rps" 'BEGIN { printf "%.2f", g / n }')
    printf '%-12s %12s %14s %8s %14s\n' "$mode" "$n_rps" "$g_rps" "$ratio" "$g_n"
done
[[ $PROFILE == perf ]] && sleep 1
if [[ $PROFILE == callgrind ]]; then
    # callgrind writes its file when the process exits.
    kill "$GW" "$NGINX"
    wait "$GW" "$NGINX" 2>/dev/null || true
fi
