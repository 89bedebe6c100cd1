#!/usr/bin/env bash
# Relay throughput of Switchboard and coturn, side by side in the same run, on
# loopback, driven by the same load generator (benches/src/bin/turnload.rs).
#
#   ./benches/turn_vs_coturn.sh                       # defaults below
#   CLIENTS=8 PACKETS=50000 SIZE=1000 ./benches/turn_vs_coturn.sh
#
# Each server gets the same static user, relays on loopback, and the default
# threading it ships with (Switchboard's mio shell: one thread; coturn: its
# default relay threads). Runs ROUNDS alternating rounds and reports the median
# of each and their ratio. Traffic stays on loopback; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-4}
PACKETS=${PACKETS:-40000}
SIZE=${SIZE:-200}
WINDOW=${WINDOW:-32}
ROUNDS=${ROUNDS:-3}
SB_PORT=${SB_PORT:-34780}
SM_PORT=${SM_PORT:-34784}
CT_PORT=${CT_PORT:-34790}

command -v turnserver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; }
cargo build --release --locked -q -p switchboard -p switchboard-smol -p switchboard-benches --bins
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

target/release/switchboard serve --turn-listen 127.0.0.1:$SB_PORT --relay-ip 127.0.0.1 \
    --min-port 40000 --max-port 44999 --user bench:benchpw --allow-loopback-peers --log-level warn \
    --http-listen 127.0.0.1:$((SB_PORT + 2)) --media-listen 127.0.0.1:$((SB_PORT + 2)) \
    >"$tmp/sb.log" 2>&1 &
pids+=($!)
target/release/switchboard-smol serve --turn-listen 127.0.0.1:$SM_PORT --relay-ip 127.0.0.1 \
    --min-port 35000 --max-port 39999 --user bench:benchpw --allow-loopback-peers --log-level warn \
    --http-listen 127.0.0.1:$((SM_PORT + 2)) --media-listen 127.0.0.1:$((SM_PORT + 2)) \
    >"$tmp/smol.log" 2>&1 &
pids+=($!)
turnserver -n --listening-ip 127.0.0.1 --listening-port $CT_PORT --relay-ip 127.0.0.1 \
    --min-port 45000 --max-port 49999 --lt-cred-mech --user bench:benchpw --realm switchboard \
    --allow-loopback-peers --no-tls --no-dtls --no-cli --no-stun-backward-compatibility \
    --log-file "$tmp/coturn.log" --simple-log >/dev/null 2>&1 &
pids+=($!)
sleep 1
# Each server must still be up (a port taken by something else makes one exit at start).
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a server exited at start:"; cat "$tmp"/*.log; exit 1; }; done

load() {
    target/release/turnload --server "127.0.0.1:$1" --user bench:benchpw \
        --clients "$CLIENTS" --packets "$PACKETS" --size "$SIZE" --window "$WINDOW" --max-seconds 60
}
rate() { sed -E 's/.*"round_trips_per_sec":([0-9]+).*/\1/'; }
done_() { sed -E 's/.*"round_trips":([0-9]+).*/\1/'; }
# The server's CPU time (user + system, clock ticks) from /proc, read around each run.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# One run against the server on port $1 (pid $2): prints the load line, then round trips per server CPU-second.
measure() {
    local t0 t1 out
    t0=$(ticks "$2"); out=$(load "$1"); t1=$(ticks "$2")
    echo "$out"
    echo "$out" | done_ | awk -v d=$((t1 - t0)) -v hz="$hz" '{ if (d > 0) printf "%.0f\n", $1 * hz / d; else print 0 }'
}

sb=(); sm=(); ct=(); sbc=(); smc=(); ctc=()
for r in $(seq 1 "$ROUNDS"); do
    { read -r a; read -r ac; } < <(measure $SB_PORT "${pids[0]}"); echo "switchboard      round $r: $a (round trips per server CPU-second: $ac)"; sb+=("$(echo "$a" | rate)"); sbc+=("$ac")
    { read -r c; read -r cc; } < <(measure $SM_PORT "${pids[1]}"); echo "switchboard-smol round $r: $c (round trips per server CPU-second: $cc)"; sm+=("$(echo "$c" | rate)"); smc+=("$cc")
    { read -r b; read -r bc; } < <(measure $CT_PORT "${pids[2]}"); echo "coturn           round $r: $b (round trips per server CPU-second: $bc)"; ct+=("$(echo "$b" | rate)"); ctc+=("$bc")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
msb=$(median "${sb[@]}"); msm=$(median "${sm[@]}"); mct=$(median "${ct[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "median round trips/s (each = 2 relayed packets): switchboard $msb (x$(ratio "$msb" "$mct") coturn)," \
     "switchboard-smol $msm (x$(ratio "$msm" "$mct") coturn), coturn $mct"
csb=$(median "${sbc[@]}"); csm=$(median "${smc[@]}"); cct=$(median "${ctc[@]}")
echo "median round trips per server CPU-second: switchboard $csb (x$(ratio "$csb" "$cct") coturn)," \
     "switchboard-smol $csm (x$(ratio "$csm" "$cct") coturn), coturn $cct"
