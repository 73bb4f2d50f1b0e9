#!/usr/bin/env bash
# Load test of bearer-guard as the external authorization service, on 127.0.0.1:
#
#   1. plain     nginx as a reverse proxy in front of an upstream;
#   2. auth      nginx + auth_request -> `bearer-guard ext-authz` (the HTTP check)
#                in front of the same upstream, with examples/proxies/nginx.conf
#                exactly as tests/proxies.rs runs it (ports replaced);
#   3. check     the HTTP check alone, called as Envoy's HTTP mode calls it;
#   4. grpc      Envoy's Authorization/Check on the gRPC listener, driven by
#                h2load with one pre-encoded CheckRequest shaped as Envoy sends it
#                (examples/envoy_check_body.rs): Envoy itself cannot be installed.
#
# One token, reused (what a client does for its life: the verified-token cache
# answers it). Everything that serves runs on $SERVER_CPU (the nginx under test,
# its upstream, bearer-guard); the load client runs on $CLIENT_CPU: wrk -t1 for
# HTTP, h2load -t1 for gRPC. Reported: req/s, p99, the ratio to plain nginx, and
# the share of the server core that other processes took during each run (from
# /proc/stat less the serving processes' own ticks): above a few %, the figure is
# disturbed; run again on a quiet machine. bearer-guard runs with
# `--worker-threads 1` (a single-threaded runtime on its one core).
# The target of issue #12: auth >= 0.45x plain (the subrequest doubles nginx's
# own work, so 0.5x is the ceiling).
#
#   bash benches/ext_authz_load.sh              # ~1 minute with the defaults
#   DURATION=3 bash benches/ext_authz_load.sh   # a quick check that everything works
#
# Each configuration is checked before it is measured (200 with the claim header
# at the upstream, 401 without a token), and the check service's own counters
# (/-/metrics) must show every measured check allowed.
#
# Knobs (env): DURATION (s, default 10), CONNECTIONS (32), GRPC_REQUESTS (200000),
# GRPC_STREAMS (32 per connection, 4 connections), BASE_PORT (19280; uses the 8
# ports from it), SERVER_CPU (0), CLIENT_CPU (1), CARGO_TARGET_DIR (target),
# NO_BUILD=1 to use the binaries already built.

set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
GRPC_REQUESTS=${GRPC_REQUESTS:-200000}
GRPC_STREAMS=${GRPC_STREAMS:-32}
BASE_PORT=${BASE_PORT:-19280}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AUD="https://api.example.com"
AS_PORT=$BASE_PORT
UPSTREAM_PORT=$((BASE_PORT + 1))
PLAIN_PORT=$((BASE_PORT + 2))
AUTH_PORT=$((BASE_PORT + 3))
GRPC_PORT=$((BASE_PORT + 4))
HTTP_PORT=$((BASE_PORT + 5))
ADMIN_PORT=$((BASE_PORT + 6))

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bg-ext-authz-load.XXXXXX")
PIDS=()

say() { printf '%s\n' "$*" >&2; }
die() {
    say "ext_authz_load.sh: $*"
    exit 1
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # wait_port PORT WHAT
    local i
    for ((i = 0; i < 100; i++)); do
        port_free "$1" || return 0
        sleep 0.1
    done
    die "$2 did not listen on $1 within 10 s: $(cat "$WORK"/*.err 2>/dev/null | tail -5)"
}

# ---------------------------------------------------------------- tools, builds
for tool in taskset curl jq; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $NGINX ]] || ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
    say "installing nginx, wrk, h2load (nghttp2-client)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        nginx wrk nghttp2-client >/dev/null; } || die "could not install nginx, wrk, h2load"
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
for port in $(seq "$BASE_PORT" $((BASE_PORT + 7))); do
    port_free "$port" || die "port $port is in use (set BASE_PORT)"
done
if [[ -z ${NO_BUILD:-} ]]; then
    say "building bearer-guard (release, --features cli) and envoy_check_body"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
        --features cli --bin bearer-guard --example envoy_check_body)
fi
BG=$TARGET/release/bearer-guard
BODY=$TARGET/release/examples/envoy_check_body
for bin in "$BG" "$BODY"; do
    [[ -x $bin ]] || die "missing $bin (build first, or unset NO_BUILD)"
done

# ---------------------------------------------------------------- the issuer
cat >"$WORK/as.toml" <<EOF
audiences = ["$AUD"]
access_token_lifetime_secs = 3600
[[client]]
id = "bench"
secret = "bench-secret"
scopes = ["orders:read"]
EOF
taskset -c "$CLIENT_CPU" "$BG" authz-server --listen "127.0.0.1:$AS_PORT" \
    --config "$WORK/as.toml" >"$WORK/as.out" 2>"$WORK/as.err" &
PIDS+=($!)
wait_port "$AS_PORT" authz-server
for ((i = 0; i < 50; i++)); do
    ISS=$(sed -n 's/^bearer-guard authz-server: issuer //p' "$WORK/as.out")
    [[ -n $ISS ]] && break
    sleep 0.1
done
[[ -n $ISS ]] || die "no issuer banner: $(cat "$WORK/as.out" "$WORK/as.err")"
TOKEN=$(curl -sf -u bench:bench-secret -d grant_type=client_credentials \
    -d scope=orders:read "$ISS/token" | jq -er .access_token) || die "no token from $ISS"

# ---------------------------------------------------------------- bearer-guard
cat >"$WORK/ext-authz.toml" <<EOF
grpc_listen = "127.0.0.1:$GRPC_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
realm = "orders-api"
[[issuer]]
issuer = "$ISS"
audiences = ["$AUD"]
[[route]]
path = "/health"
public = true
[[route]]
path = "/"
scopes_any = ["orders:read"]
[forward]
claims_to_headers = { sub = "x-auth-sub", client_id = "x-auth-client-id", scope = "x-auth-scope" }
EOF
# One core: one worker thread (a single-threaded runtime), as nginx has one worker.
BEARER_GUARD_LOG=warn taskset -c "$SERVER_CPU" "$BG" --worker-threads 1 ext-authz \
    --config "$WORK/ext-authz.toml" 2>"$WORK/bg.err" &
BG_PID=$!
PIDS+=("$BG_PID")
wait_port "$ADMIN_PORT" "bearer-guard ext-authz"
curl -sf "http://127.0.0.1:$ADMIN_PORT/-/ready" >/dev/null || die "ext-authz not ready"

checks() { # checks PROTOCOL: the allowed count of bearer_guard_ext_authz_checks_total
    curl -sf "http://127.0.0.1:$ADMIN_PORT/-/metrics" |
        awk -v p="$1" '$1 ~ /^bearer_guard_ext_authz_checks_total/ && $1 ~ "protocol=\"" p "\"" &&
            $1 ~ /outcome="allowed"/ { n += $2 } END { print n + 0 }'
}

# ---------------------------------------------------------------- nginx
# The upstream and the plain proxy: one nginx, one worker, like the auth one.
cat >"$WORK/plain.conf" <<EOF
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log off;
    upstream api { server 127.0.0.1:$UPSTREAM_PORT; keepalive 32; }
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / {
            default_type application/json;
            return 200 '{"sub":"\$http_x_auth_sub"}';
        }
    }
    server {
        listen 127.0.0.1:$PLAIN_PORT;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://api;
        }
    }
}
EOF
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$AUTH_PORT/" \
    -e "s/127\.0\.0\.1:9002/127.0.0.1:$HTTP_PORT/" \
    -e "s/127\.0\.0\.1:9000/127.0.0.1:$UPSTREAM_PORT/" \
    "$ROOT/examples/proxies/nginx.conf" >"$WORK/auth.conf"
for name in plain auth; do
    mkdir -p "$WORK/$name"
    taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK/$name" -c "$WORK/$name.conf" \
        -g "daemon off; error_log stderr; pid $WORK/$name/nginx.pid;" 2>"$WORK/$name.err" &
    PIDS+=($!)
done
wait_port "$PLAIN_PORT" "nginx (plain)"
wait_port "$AUTH_PORT" "nginx (auth)"

expect() { # expect PORT STATUS [curl args]
    local port=$1 want=$2 got
    shift 2
    got=$(curl -s -o "$WORK/body" -w '%{http_code}' "$@" "http://127.0.0.1:$port/orders")
    [[ $got == "$want" ]] || die "port $port: HTTP $got, wanted $want ($(head -c 200 "$WORK/body"))"
}
expect "$PLAIN_PORT" 200
expect "$AUTH_PORT" 401
expect "$AUTH_PORT" 200 -H "Authorization: Bearer $TOKEN"
grep -q '"sub":"bench"' "$WORK/body" || die "the upstream did not get X-Auth-Sub: $(cat "$WORK/body")"

# ---------------------------------------------------------------- measure
machine() {
    printf '%s, %s cores, load average %s\n' "$(uname -m)" "$(nproc)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}
say "machine: $(machine)"

# The server core's ticks: busy in processes (user, nice, system, steal; interrupt
# and softirq time, loopback's packet work, is nobody's), total, and those of the
# serving processes (the nginx instances and their workers, bearer-guard), all
# pinned to that core.
serving_pids() {
    local pid
    for pid in "${PIDS[@]}"; do
        echo "$pid"
        pgrep -P "$pid" || true
    done
}
snap() {
    local ours=0 pid t
    for pid in $(serving_pids); do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        ours=$((ours + t))
    done
    awk -v c="cpu$SERVER_CPU" -v ours="$ours" \
        '$1 == c { print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, ours }' /proc/stat
}
others() { # others BEFORE AFTER: % of the server core used by other processes
    awk -v b="$1" -v a="$2" 'BEGIN { split(b, x, " "); split(a, y, " ");
        total = y[2] - x[2]; other = (y[1] - x[1]) - (y[3] - x[3]);
        if (other < 0) other = 0; printf "%.0f %%", total ? 100 * other / total : 0 }'
}

run_wrk() { # run_wrk PORT [header]: prints "req/s p99_ms"
    local port=$1 out=$WORK/wrk.out
    shift
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" \
        "http://127.0.0.1:$port/orders" >"$out"
    grep -q 'Non-2xx' "$out" && die "non-2xx answers under load: $(cat "$out")"
    awk '/Requests\/sec/ { rps = $2 }
         $1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
                       else if (v ~ /ms$/) { sub(/ms$/, "", v) }
                       else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
                       p99 = v }
         END { printf "%.0f %.2f\n", rps, p99 }' "$out"
}

s0=$(snap)
read -r PLAIN_RPS PLAIN_P99 < <(run_wrk "$PLAIN_PORT")
s1=$(snap)
PLAIN_OTHERS=$(others "$s0" "$s1")
before=$(checks http)
read -r AUTH_RPS AUTH_P99 < <(run_wrk "$AUTH_PORT" -H "Authorization: Bearer $TOKEN")
after=$(checks http)
s2=$(snap)
AUTH_OTHERS=$(others "$s1" "$s2")
# The HTTP check alone, as Envoy's HTTP mode calls it (the request is the original).
read -r CHECK_RPS CHECK_P99 < <(run_wrk "$HTTP_PORT" -H "Authorization: Bearer $TOKEN")
CHECK_OTHERS=$(others "$s2" "$(snap)")
say "http checks allowed during the run: $((after - before))"

TOKEN=$TOKEN CHECK_PATH=/orders "$BODY" >"$WORK/check.bin"
before=$(checks grpc)
s3=$(snap)
taskset -c "$CLIENT_CPU" h2load -t1 -c4 -m"$GRPC_STREAMS" -n"$GRPC_REQUESTS" \
    -d "$WORK/check.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    --log-file="$WORK/h2load.log" \
    "http://127.0.0.1:$GRPC_PORT/envoy.service.auth.v3.Authorization/Check" >"$WORK/h2load.out"
after=$(checks grpc)
GRPC_OTHERS=$(others "$s3" "$(snap)")
allowed=$((after - before))
((allowed == GRPC_REQUESTS)) ||
    die "gRPC: $allowed of $GRPC_REQUESTS checks allowed: $(tail -20 "$WORK/h2load.out")"
GRPC_RPS=$(awk '/^finished in/ { gsub(",", ""); print int($4) }' "$WORK/h2load.out")
# h2load's log: start time, status, microseconds until the response ended.
GRPC_P99=$(sort -n -k3 "$WORK/h2load.log" |
    awk '{ v[NR] = $3 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000 }')

say "machine after: $(machine)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\n| path | req/s | p99 | × plain nginx | others on the server core |\n|---|---:|---:|---:|---:|\n'
printf '| nginx, plain proxy | %s | %s ms | 1.00 | %s |\n' "$PLAIN_RPS" "$PLAIN_P99" "$PLAIN_OTHERS"
printf '| nginx + auth_request -> bearer-guard | %s | %s ms | %s | %s |\n' \
    "$AUTH_RPS" "$AUTH_P99" "$(ratio "$AUTH_RPS" "$PLAIN_RPS")" "$AUTH_OTHERS"
printf '| HTTP check alone (wrk, Envoy HTTP mode) | %s | %s ms | %s | %s |\n' \
    "$CHECK_RPS" "$CHECK_P99" "$(ratio "$CHECK_RPS" "$PLAIN_RPS")" "$CHECK_OTHERS"
printf '| gRPC Check (h2load, %s streams x 4 conns) | %s | %s ms | %s | %s |\n' \
    "$GRPC_STREAMS" "$GRPC_RPS" "$GRPC_P99" "$(ratio "$GRPC_RPS" "$PLAIN_RPS")" "$GRPC_OTHERS"
printf '\ntarget: auth >= 0.45x plain: %s\n' \
    "$(awk -v a="$AUTH_RPS" -v b="$PLAIN_RPS" 'BEGIN { print (a / b >= 0.45) ? "met" : "NOT met" }')"
