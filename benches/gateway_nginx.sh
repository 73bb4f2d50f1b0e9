#!/usr/bin/env bash
# `bearer-guard gateway` side by side with nginx (Debian's package) as a plain
# reverse proxy, on 127.0.0.1 only.
#
#   bash benches/gateway_nginx.sh                # ~1 minute after the build
#   DURATION=3 bash benches/gateway_nginx.sh     # a quick check
#
# Both proxies run one worker pinned to the same core (taskset -c $SERVER_CPU;
# the gateway with TOKIO_WORKER_THREADS=1, nginx with worker_processes 1) and keep
# upstream connections alive (nginx: `keepalive` + HTTP/1.1; the gateway pools by
# default). wrk (one thread, $CONNECTIONS connections) and the upstream share the
# other core ($CLIENT_CPU). The upstream is a second nginx answering 200 with a
# small body, the same for both. The token is one RS256 access token from the
# bundled authorization server, reused on every request (so the gateway answers
# from its verified-token cache after the first), sent to both proxies.
#
# Scenarios, each proxy measured the same way:
#   public        a public route: proxying alone;
#   validating    a route that validates the token (nginx, which has no JWT
#                 validation in its free version, just proxies it);
#   tls-public, tls-validating
#                 the same over TLS 1.3 (one self-signed ECDSA P-256 certificate
#                 made by openssl, served by both), wrk reusing its connections.
# Each scenario runs $ROUNDS rounds, nginx then the gateway in even rounds and
# the other way round in odd ones, so a slow spell or a drift of the machine
# touches both alike; printed: the median req/s and p99 of each
# over the rounds, and the ratio of the medians (nginx alone moved by ±20 %
# between runs on an idle VM).
# The figures are only as good as the machine is quiet: the load average is
# printed first and last; on a machine busy with other work, say so with them.
#
# Knobs (env): DURATION (s, 10), ROUNDS (4), CONNECTIONS (32), SERVER_CPU (0),
# CLIENT_CPU (1), AS_PORT (19380), UP_PORT (19381), NGINX_PORT (19382),
# NGINX_TLS_PORT (19383), GW_PORT (19384), GW_TLS_PORT (19385), CARGO_TARGET_DIR
# (target), NO_BUILD=1 to use the release binary already built.
# (A `cargo bench` into the same target directory rebuilds the binary without
# LTO: build the release one again after it.)

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-4}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
AS_PORT=${AS_PORT:-19380}
UP_PORT=${UP_PORT:-19381}
NGINX_PORT=${NGINX_PORT:-19382}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-19383}
GW_PORT=${GW_PORT:-19384}
GW_TLS_PORT=${GW_TLS_PORT:-19385}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BG=$TARGET/release/bearer-guard
AUD="https://api.bench.invalid"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bg-nginx.XXXXXX")
PIDS=()

say() { printf '%s\n' "$*" >&2; }
die() {
    say "gateway_nginx.sh: $*"
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

install() { # install COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    say "installing $2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$2" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; } ||
        die "could not install $2"
}
command -v taskset >/dev/null || die "taskset (util-linux) is required"
install curl curl
install jq jq
install openssl openssl
install wrk wrk
[[ -x /usr/sbin/nginx ]] || install nginx nginx
NGINX=/usr/sbin/nginx
(($(nproc) >= 2)) || say "warning: fewer than 2 cores; proxies and wrk will share one"

if [[ -z ${NO_BUILD:-} ]]; then
    say "building bearer-guard (release, --features cli)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
        --features cli --bin bearer-guard)
fi
[[ -x $BG ]] || die "missing $BG (build first, or unset NO_BUILD)"

wait_for() { # wait_for URL [CURL_ARGS...]: until it answers (any status)
    local url=$1 i
    shift
    for ((i = 0; i < 100; i++)); do
        curl -s -o /dev/null "$@" "$url" && return 0
        sleep 0.1
    done
    die "$url never answered"
}

# ------------------------------------------------------------ certificate
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# ------------------------------------------------------------ issuer, token
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

# ------------------------------------------------------------ nginx: upstream, proxy
nginx_conf() { # nginx_conf NAME BODY: a foreground single-worker nginx config
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/nginx.conf" <<EOF
worker_processes 1;
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
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }"
taskset -c "$CLIENT_CPU" "$NGINX" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
PIDS+=($!)
taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log" &
PIDS+=($!)

# ------------------------------------------------------------ the gateway
gateway_conf() { # gateway_conf PORT [TLS]
    cat <<EOF
listen = "127.0.0.1:$1"
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
    if [[ -n ${2:-} ]]; then
        printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem"
    fi
}
gateway_conf "$GW_PORT" >"$WORK/gw.toml"
gateway_conf "$GW_TLS_PORT" tls >"$WORK/gw-tls.toml"
for config in gw gw-tls; do
    BEARER_GUARD_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c "$SERVER_CPU" \
        "$BG" gateway --config "$WORK/$config.toml" 2>"$WORK/$config.log" &
    PIDS+=($!)
done

wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "http://127.0.0.1:$NGINX_PORT/"
wait_for "https://127.0.0.1:$NGINX_TLS_PORT/" --cacert "$WORK/cert.pem"
wait_for "http://127.0.0.1:$GW_PORT/public"
wait_for "https://127.0.0.1:$GW_TLS_PORT/public" --cacert "$WORK/cert.pem"

# Everyone answers as expected before anything is measured.
check() { # check URL WANT [CURL_ARGS...]
    local url=$1 want=$2 got
    shift 2
    got=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/cert.pem" "$@" "$url")
    [[ $got == "$want" ]] || die "$url: $got, expected $want"
}
for base in "http://127.0.0.1:$GW_PORT" "https://127.0.0.1:$GW_TLS_PORT"; do
    check "$base/public" 200
    check "$base/api/data" 401
    check "$base/api/data" 200 -H "authorization: Bearer $TOKEN"
done
for base in "http://127.0.0.1:$NGINX_PORT" "https://127.0.0.1:$NGINX_TLS_PORT"; do
    check "$base/api/data" 200 -H "authorization: Bearer $TOKEN"
done

measure() { # measure URL: "req/s p99" from one wrk run
    local out
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -H "authorization: Bearer $TOKEN" "$1")
    if grep -q 'Non-2xx' <<<"$out"; then
        die "non-2xx answers from $1: $out"
    fi
    awk '/^Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = $2 } END { print rps, p99 }' <<<"$out"
}

median() { # median "RPS P99"...: the median req/s and the median p99 (ms)
    local rps p99
    rps=$(printf '%s\n' "$@" | awk '{ print $1 }' | sort -g |
        awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    p99=$(printf '%s\n' "$@" | awk '{
        p = $2
        if (p ~ /us$/) { sub(/us$/, "", p); p /= 1000 }
        else if (p ~ /ms$/) sub(/ms$/, "", p)
        else if (p ~ /s$/) { sub(/s$/, "", p); p *= 1000 }
        print p
    }' | sort -g | awk '{ a[NR] = $1 } END { printf "%.2fms\n", a[int((NR + 1) / 2)] }')
    echo "$rps $p99"
}

say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %14s %10s %14s %10s %8s\n' scenario "nginx req/s" "nginx p99" \
    "gateway req/s" "gw p99" ratio
for scenario in public validating tls-public tls-validating; do
    case $scenario in
    public) n="http://127.0.0.1:$NGINX_PORT/public" g="http://127.0.0.1:$GW_PORT/public" ;;
    validating) n="http://127.0.0.1:$NGINX_PORT/api/data" g="http://127.0.0.1:$GW_PORT/api/data" ;;
    tls-public) n="https://127.0.0.1:$NGINX_TLS_PORT/public" g="https://127.0.0.1:$GW_TLS_PORT/public" ;;
    tls-validating) n="https://127.0.0.1:$NGINX_TLS_PORT/api/data" g="https://127.0.0.1:$GW_TLS_PORT/api/data" ;;
    esac
    n_runs=() g_runs=()
    for ((round = 0; round < ROUNDS; round++)); do
        # Every other round the gateway first: the machine's speed drifts, and
        # a fixed order hands the drift to whichever comes second.
        if ((round % 2 == 0)); then
            n_runs+=("$(measure "$n")")
            g_runs+=("$(measure "$g")")
        else
            g_runs+=("$(measure "$g")")
            n_runs+=("$(measure "$n")")
        fi
    done
    read -r n_rps n_p99 < <(median "${n_runs[@]}")
    read -r g_rps g_p99 < <(median "${g_runs[@]}")
    ratio=$(awk -v g="$g_rps" -v n="$n_rps" 'BEGIN { printf "%.2f", g / n }')
    printf '%-16s %14s %10s %14s %10s %8s\n' "$scenario" "$n_rps" "$n_p99" "$g_rps" "$g_p99" "$ratio"
done
say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
