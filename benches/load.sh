#!/usr/bin/env bash
# Side-by-side HTTP load test of bearer-guard against jwt-authorizer and
# tower-oauth2-resource-server, with a hand-written reference validator and a
# no-auth ceiling, on 127.0.0.1 only.
#
#   bash benches/load.sh                  # ~21 minutes with the defaults
#   DURATION=3 ROUNDS=1 bash benches/load.sh   # a quick check that everything works
#
# Every server has the contract of examples/bench_server.rs (env PORT, ISS, AUD,
# JWKS_URL; GET /api/data needs scope `read:data`; 200 with {"data":[1,2,3]},
# 401/403 otherwise); the others are in benches/compare, a Cargo project of its
# own so their crates never enter bearer-guard's dependency tree. `handwritten` is
# the reference point of the issue: a minimal validator on aws-lc-rs with the keys
# parsed once at startup, no cache, every check done on every request (what a
# team would write by hand instead of using a library). Each server runs
# a current_thread runtime pinned to one core (taskset -c $SERVER_CPU); wrk runs
# pinned to the other (taskset -c $CLIENT_CPU, one thread, $CONNECTIONS
# connections). Each is checked against the contract before it is measured.
#
# Tokens: one issuer for everything, the bundled authorization server run as a
# process (`bearer-guard authz-server --config <generated TOML>`), one per
# algorithm. The servers get its issuer and JWKS URL; the tokens come from its
# own token endpoint (client credentials), $TOKENS of them minted by one curl
# process over a kept-alive connection (a curl config file with one request per
# token). So the tokens are exactly what a client of that issuer gets, and no
# library code or extra example is needed to mint them.
#
# Scenarios, per algorithm (RS256, ES256) and server:
#   reused  one token on every request (what a client does for the token's life);
#   rotated $TOKENS distinct valid tokens, cycled by a wrk Lua script. With the
#           verified-token cache on, bearer-guard verifies each token on its first
#           pass and answers the later passes from the cache: this measures a working
#           set of $TOKENS live tokens, not "every request a new token". The
#           cache-off row is the every-request-verifies figure.
# Each scenario runs $ROUNDS rounds, every server once per round in turn (every
# other round in reverse order), so a slow spell or a drift of the machine touches
# all of them alike; the table has the median of each
# column over the rounds (each column on its own), and the ratios of the median
# req/s.
# Then a peak-RSS check: bearer-guard (cache on) after all $TOKENS tokens have been
# seen, against the same server after one token. Last, once, what moka itself costs
# per entry (benches/compare's moka_footprint, $TOKENS entries, each case in a fresh
# process): bearer-guard's cache configuration with a tiny value, 32-byte keys and
# 716-byte token keys, as RssAnon growth.
#
# Reported: req/s, p50, p99 (wrk --latency), peak RSS (VmHWM from
# /proc/PID/status after the run), req/s ratios vs jwt-authorizer and noauth, and
# from /proc/stat over the run: the share of the server's core the server used
# (well under 100 %: wrk, not the server, was the limit) and the share others
# used (above a few %: the figure is disturbed; run again on a quiet machine).
# The figures are only as good as the machine is quiet: look at the load average
# printed first and last. One wrk thread can itself be the limit for noauth (more so
# with the Lua rotation, which costs wrk per request), so noauth's req/s is a floor
# of the real ceiling and "× noauth" flatters the others.
#
# Knobs (env): DURATION (s, default 10), ROUNDS (4), CONNECTIONS (32), TOKENS (10000),
# ALGS ("RS256 ES256"), SERVERS ("bg-cache bg-nocache handwritten jwt-authorizer
# tower-oauth2 noauth"), RSS_DURATION (s, 5), AS_PORT (19180), SERVER_PORT (19181),
# SERVER_CPU (0), CLIENT_CPU (1), CARGO_TARGET_DIR (target), COMPARE_TARGET_DIR
# (benches/compare/target), NO_BUILD=1 to use the binaries already built.
# (A `cargo bench` into the same target directory rebuilds the binary without
# LTO: build the release one again after it.)

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-4}
CONNECTIONS=${CONNECTIONS:-32}
TOKENS=${TOKENS:-10000}
ALGS=${ALGS:-"RS256 ES256"}
SERVERS=${SERVERS:-"bg-cache bg-nocache handwritten jwt-authorizer tower-oauth2 noauth"}
RSS_DURATION=${RSS_DURATION:-5}
AS_PORT=${AS_PORT:-19180}
SERVER_PORT=${SERVER_PORT:-19181}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
COMPARE_TARGET=${COMPARE_TARGET_DIR:-$ROOT/benches/compare/target}
AUD="https://api.bench.invalid"
OTHER_AUD="https://other.bench.invalid"
BASE="http://127.0.0.1:$SERVER_PORT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bg-load.XXXXXX")
AS_PID=""
SERVER_PID=""

say() { printf '%s\n' "$*" >&2; }
die() {
    say "load.sh: $*"
    exit 1
}

stop() { # stop PID: TERM, then KILL after 5 s; never fails
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop "$SERVER_PID"
    stop "$AS_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- tools, builds
command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v curl >/dev/null || die "curl is required"
command -v jq >/dev/null || die "jq is required"
if ! command -v wrk >/dev/null; then
    say "installing wrk"
    apt-get install -y -qq wrk >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } ||
        die "could not install wrk"
fi
(($(nproc) >= 2)) || say "warning: fewer than 2 cores; server and wrk will share one"

if [[ -z ${NO_BUILD:-} ]]; then
    say "building bearer-guard (release, --features cli, bench_server)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
        --features cli --bin bearer-guard --example bench_server)
    say "building benches/compare (release)"
    (cd "$ROOT/benches/compare" && CARGO_TARGET_DIR=$COMPARE_TARGET cargo build \
        --release --quiet --locked)
fi
BG=$TARGET/release/bearer-guard
BENCH_SERVER=$TARGET/release/examples/bench_server
for bin in "$BG" "$BENCH_SERVER" \
    "$COMPARE_TARGET"/release/{handwritten,jwt_authorizer,tower_oauth2,noauth,moka_footprint}; do
    [[ -x $bin ]] || die "missing $bin (build first, or unset NO_BUILD)"
done

for port in "$AS_PORT" "$SERVER_PORT"; do
    port_free "$port" || die "port $port is in use (set AS_PORT / SERVER_PORT)"
done

cat >"$WORK/rotate.lua" <<'EOF'
-- Cycles through the tokens in $TOKENS_FILE, one per request.
local tokens, i = {}, 0
for line in io.lines(os.getenv("TOKENS_FILE")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/data", { ["Authorization"] = tokens[i] })
end
EOF

# -------------------------------------------------------------- the issuer
start_issuer() { # start_issuer ALG: sets ISS, JWKS_URL, AS_PID
    local alg=$1 banner=$WORK/as.out i
    cat >"$WORK/as.toml" <<EOF
audiences = ["$AUD", "$OTHER_AUD"]
access_token_lifetime_secs = 3600
signing_algorithm = "$alg"

[[client]]
id = "bench"
secret = "bench-secret"
scopes = ["read:data"]

[[client]]
id = "bench-other"
secret = "bench-secret"
scopes = ["write:data"]
EOF
    # On the client's core: it only works while tokens are minted.
    taskset -c "$CLIENT_CPU" "$BG" authz-server --listen "127.0.0.1:$AS_PORT" \
        --config "$WORK/as.toml" >"$banner" 2>"$WORK/as.err" &
    AS_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^  jwks ' "$banner" 2>/dev/null && break
        kill -0 "$AS_PID" 2>/dev/null || die "authz-server exited: $(cat "$WORK/as.err")"
        sleep 0.1
    done
    ISS=$(sed -n 's/^bearer-guard authz-server: issuer //p' "$banner")
    JWKS_URL=$(awk '$1 == "jwks" { print $2 }' "$banner")
    [[ -n $ISS && -n $JWKS_URL ]] || die "no issuer banner: $(cat "$banner" "$WORK/as.err")"
}

token() { # token CLIENT [EXTRA_FORM_FIELD [SCOPE]]
    curl -sf -u "$1:bench-secret" -d grant_type=client_credentials \
        -d "scope=${3:-read:data}" ${2:+-d "$2"} "$ISS/token" | jq -er .access_token
}

mint_tokens() { # mint_tokens FILE: $TOKENS distinct tokens, one curl process
    local out=$1 cfg=$WORK/mint.curl i
    : >"$cfg"
    for ((i = 0; i < TOKENS; i++)); do
        ((i == 0)) || echo next >>"$cfg"
        printf 'url = "%s/token"\nuser = "bench:bench-secret"\ndata = "grant_type=client_credentials&scope=read%%3Adata"\nwrite-out = "\\n"\n' \
            "$ISS" >>"$cfg"
    done
    curl -s -K "$cfg" | jq -r '.access_token // empty' >"$out"
    local n unique
    n=$(grep -c . "$out")
    unique=$(sort -u "$out" | grep -c .)
    ((n == TOKENS && unique == TOKENS)) || die "minted $n tokens, $unique distinct; wanted $TOKENS"
}

# -------------------------------------------------------------- the servers
server_cmd() { # server_cmd NAME: the binary, and its extra environment
    case $1 in
    bg-cache) echo "$BENCH_SERVER" ;;
    bg-nocache) echo "$BENCH_SERVER" ;;
    handwritten) echo "$COMPARE_TARGET/release/handwritten" ;;
    jwt-authorizer) echo "$COMPARE_TARGET/release/jwt_authorizer" ;;
    tower-oauth2) echo "$COMPARE_TARGET/release/tower_oauth2" ;;
    noauth) echo "$COMPARE_TARGET/release/noauth" ;;
    *) die "unknown server $1" ;;
    esac
}

start_server() { # start_server NAME: sets SERVER_PID, waits until it answers
    local name=$1 cache=on i
    [[ $name == bg-nocache ]] && cache=off
    PORT=$SERVER_PORT ISS=$ISS AUD=$AUD JWKS_URL=$JWKS_URL BG_TOKEN_CACHE=$cache \
        taskset -c "$SERVER_CPU" "$(server_cmd "$name")" 2>"$WORK/server.err" &
    SERVER_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/data") != 000 ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited: $(cat "$WORK/server.err")"
        sleep 0.1
    done
    die "$name did not answer on $BASE within 10 s"
}

expect() { # expect NAME WANTED_STATUS WHAT [curl args...]
    local name=$1 want=$2 what=$3 got
    shift 3
    got=$(curl -s -o "$WORK/body" -w '%{http_code}' "$@" "$BASE/api/data")
    [[ $got == "$want" ]] || die "$name: $what: HTTP $got, wanted $want ($(head -c 200 "$WORK/body"))"
    if [[ $want == 200 ]]; then
        [[ $(jq -c . "$WORK/body") == '{"data":[1,2,3]}' ]] ||
            die "$name: $what: body $(head -c 200 "$WORK/body")"
    fi
}

check_contract() { # check_contract NAME: the same answers from every server
    local name=$1
    if [[ $name == noauth ]]; then
        expect "$name" 200 "no token" && return 0
    fi
    expect "$name" 200 "valid token" -H "Authorization: Bearer $TOKEN"
    expect "$name" 401 "no token"
    expect "$name" 401 "garbage token" -H "Authorization: Bearer abc.def.ghi"
    expect "$name" 401 "wrong audience" -H "Authorization: Bearer $OTHER_AUD_TOKEN"
    expect "$name" 403 "scope missing" -H "Authorization: Bearer $NO_SCOPE_TOKEN"
}

# Jiffies of the server's core: "busy total" (busy: user+nice+system, where a
# process's own work shows), and of one process (utime+stime).
core_jiffies() { awk -v c="cpu$SERVER_CPU" '$1 == c { print $2 + $3 + $4, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
pid_jiffies() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

peak_rss_kib() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"; }

ms() { # wrk's latency ("812.00us", "1.23ms", "1.01s") in ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}

# run_wrk SCENARIO OUTFILE: reused token by header, rotated tokens by Lua script
run_wrk() {
    local scenario=$1 out=$2 duration=${3:-$DURATION}
    local args=(-t1 "-c$CONNECTIONS" "-d${duration}s" --latency)
    if [[ $scenario == reused ]]; then
        args+=(-H "Authorization: Bearer $TOKEN")
    else
        args+=(-s "$WORK/rotate.lua")
    fi
    TOKENS_FILE=$WORK/tokens taskset -c "$CLIENT_CPU" wrk "${args[@]}" "$BASE/api/data" >"$out"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

measure() { # measure ALG NAME SCENARIO: one wrk run on a fresh server
    local alg=$1 name=$2 scenario=$3 out=$WORK/wrk.out
    start_server "$name"
    check_contract "$name"
    local core0 pid0 core1 pid1 busy0 total0 busy1 total1
    core0=$(core_jiffies) pid0=$(pid_jiffies "$SERVER_PID")
    run_wrk "$scenario" "$out"
    core1=$(core_jiffies) pid1=$(pid_jiffies "$SERVER_PID")
    read -r busy0 total0 <<<"$core0"
    read -r busy1 total1 <<<"$core1"
    # How much of its core the server used (well under 100: wrk was the limit, or
    # another process took the core), and how much of the core others used.
    local total=$((total1 - total0 > 0 ? total1 - total0 : 1)) server_pct others_pct
    server_pct=$(((pid1 - pid0) * 100 / total))
    others_pct=$((((busy1 - busy0) - (pid1 - pid0)) * 100 / total))
    ((others_pct >= 0)) || others_pct=0
    local rss rps p50 p99 non2xx
    rss=$(peak_rss_kib "$SERVER_PID")
    stop "$SERVER_PID"
    SERVER_PID=""
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    # non-2xx answers plus socket errors (connect, read, write, timeout)
    non2xx=$(awk '/Non-2xx/ { n += $NF }
        /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
        END { print n + 0 }' "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$alg" "$scenario" "$name" "$rps" "$p50" \
        "$p99" "$((rss / 1024))" "$non2xx" "$server_pct" "$others_pct" >>"$RESULTS"
    say "$(printf '  %-7s %-7s %-15s %10s req/s  p50 %7s ms  p99 %7s ms  peak RSS %4s MiB  CPU%s: server %3s%%, others %3s%%%s' \
        "$alg" "$scenario" "$name" "$rps" "$p50" "$p99" "$((rss / 1024))" "$SERVER_CPU" \
        "$server_pct" "$others_pct" "$( ((non2xx == 0)) || echo "  ($non2xx errors)")")"
}

RSS_LINES=()
rss_check() { # rss_check ALG: bearer-guard, cache on, 1 token vs all $TOKENS tokens
    local alg=$1 out=$WORK/wrk-rss.out one all requests
    start_server bg-cache
    # The same load with one token first, so both readings hold the same
    # connections and buffers and the difference is the cache's.
    run_wrk reused "$out" 1
    one=$(peak_rss_kib "$SERVER_PID")
    run_wrk rotated "$out" "$RSS_DURATION"
    all=$(peak_rss_kib "$SERVER_PID")
    stop "$SERVER_PID"
    SERVER_PID=""
    requests=$(awk '/requests in/ { print $1 }' "$out")
    local touched="all $TOKENS tokens seen"
    ((requests >= TOKENS)) || touched="only $requests of $TOKENS tokens seen: raise RSS_DURATION"
    RSS_LINES+=("$(printf '| %s | %s | %s | %s | %s |' "$alg" "$((one / 1024))" \
        "$((all / 1024))" "$(((all - one) * 1024 / TOKENS))" "$touched")")
}

# -------------------------------------------------------------- the runs
say "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
say "wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency; $TOKENS rotated tokens"
START=$(date +%s)
for alg in $ALGS; do
    start_issuer "$alg"
    TOKEN=$(token bench)
    NO_SCOPE_TOKEN=$(token bench-other "" write:data)
    OTHER_AUD_TOKEN=$(token bench "resource=$OTHER_AUD")
    say "$alg: issuer $ISS; minting $TOKENS tokens"
    mint_tokens "$WORK/tokens"
    for scenario in reused rotated; do
        for ((round = 0; round < ROUNDS; round++)); do
            # Every other round in reverse order: the machine's speed drifts
            # (here it rose ~40 % over one run), and a fixed order hands the
            # drift to whichever server comes last.
            order=$SERVERS
            ((round % 2 == 0)) || order=$(printf '%s\n' $SERVERS | tac)
            for name in $order; do
                measure "$alg" "$name" "$scenario"
            done
        done
    done
    rss_check "$alg"
    stop "$AS_PID"
    AS_PID=""
done
# Once, not per algorithm: it has no server and no token. Each case in a process of
# its own, so one case's heap does not pollute the other.
MOKA_LINES=()
for case in array32 string716; do
    MOKA_LINES+=("$("$COMPARE_TARGET/release/moka_footprint" "$case" "$TOKENS")")
done
say "done in $(($(date +%s) - START)) s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# -------------------------------------------------------------- the table
echo
echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, server on 1 core, median of $ROUNDS rounds; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| alg | tokens | server | req/s | p50 ms | p99 ms | peak RSS MiB | × jwt-authorizer | × noauth | server CPU % | others on its CPU % |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' -v tokens="$TOKENS" '
    # The median of the values kept under one key, "|"-separated.
    function median(list,    v, n, i, j, t) {
        n = split(substr(list, 2), v, "|")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function ratio(x, base) { return base > 0 ? sprintf("%.2f", x / base) : "–" }
    { key = $1 SUBSEP $2 SUBSEP $3
      if (!(key in seen)) { seen[key] = 1; order[++n] = key }
      for (c = 4; c <= 10; c++) col[key, c] = col[key, c] "|" $c }
    END {
        for (i = 1; i <= n; i++) {
            key = order[i]
            for (c = 4; c <= 10; c++) m[key, c] = median(col[key, c])
            split(key, k, SUBSEP)
            if (k[3] == "jwt-authorizer") ja[k[1] SUBSEP k[2]] = m[key, 4]
            if (k[3] == "noauth") na[k[1] SUBSEP k[2]] = m[key, 4]
        }
        for (i = 1; i <= n; i++) {
            key = order[i]; split(key, k, SUBSEP); pair = k[1] SUBSEP k[2]
            name = k[3]; if (m[key, 8] > 0) name = name " (" m[key, 8] " errors)"
            printf "| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", k[1],
                (k[2] == "reused" ? "1 reused" : tokens " rotated"), name, m[key, 4],
                m[key, 5], m[key, 6], m[key, 7], ratio(m[key, 4], ja[pair]),
                ratio(m[key, 4], na[pair]), m[key, 9], m[key, 10]
        } }' "$RESULTS"
echo
echo "bearer-guard (cache on) peak RSS (VmHWM) under the same load, after 1 s with one token, then after ${RSS_DURATION} s of $TOKENS rotated tokens:"
echo
echo "| alg | 1 token MiB | $TOKENS tokens MiB | ≈ bytes per token | |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${RSS_LINES[@]}"
echo
echo "moka itself per entry (benches/compare moka_footprint: bearer-guard's cache configuration, a tiny value; RssAnon growth over $TOKENS inserts):"
echo
printf '%s\n' "${MOKA_LINES[@]}"
