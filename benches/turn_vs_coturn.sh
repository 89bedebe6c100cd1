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
    >"$tmp/sb.log" 2>&1 &
pids+=($!)
target/release/switchboard-smol serve --turn-listen 127.0.0.1:$SM_PORT --relay-ip 127.0.0.1 \
    --min-port 35000 --max-port 39999 --user bench:benchpw --allow-loopback-peers --log-level warn \
    >"$tmp/smol.log" 2>&1 &
pids+=($!)
turnserver -n --listening-ip 127.0.0.1 --listening-port $CT_PORT --relay-ip 127.0.0.1 \
    --min-port 45000 --max-port 49999 --lt-cred-mech --user bench:benchpw --realm switchboard \
    --allow-loopback-peers --no-tls --no-dtls --no-cli --no-stun-backward-compatibility \
    --log-file "$tmp/coturn.log" --simple-log >/dev/null 2>&1 &
pids+=($!)
sleep 1

load() {
    target/release/turnload --server "127.0.0.1:$1" --user bench:benchpw \
        --clients "$CLIENTS" --packets "$PACKETS" --size "$SIZE" --window "$WINDOW" --max-seconds 60
}
rate() { sed -E 's/.*"round_trips_per_sec":([0-9]+).*/\1/'; }

sb=(); sm=(); ct=()
for r in $(seq 1 "$ROUNDS"); do
    a=$(load $SB_PORT); echo "switchboard      round $r: $a"; sb+=("$(echo "$a" | rate)")
    c=$(load $SM_PORT); echo "switchboard-smol round $r: $c"; sm+=("$(echo "$c" | rate)")
    b=$(load $CT_PORT); echo "coturn           round $r: $b"; ct+=("$(echo "$b" | rate)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
msb=$(median "${sb[@]}"); msm=$(median "${sm[@]}"); mct=$(median "${ct[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "median round trips/s (each = 2 relayed packets): switchboard $msb (x$(ratio "$msb" "$mct") coturn)," \
     "switchboard-smol $msm (x$(ratio "$msm" "$mct") coturn), coturn $mct"
