#!/usr/bin/env bash
# Relay throughput of Switchboard and coturn, side by side in the same run, on
# loopback, driven by the same load generator (benches/src/bin/turnload.rs).
#
#   ./benches/turn_vs_coturn.sh                       # defaults below
#   CLIENTS=8 PACKETS=50000 SIZE=1000 ./benches/turn_vs_coturn.sh
#
# Each server gets the same static user, relays on loopback, and the default
# threading it ships with (Switchboard: one worker per core; coturn: its
# default relay threads), plus Switchboard with --workers 1 for comparison.
# Runs ROUNDS alternating rounds and reports the median of each, its ratio to
# coturn, the round-trip time (p99, µs), and the packets lost. With
# MODE=binding the load is STUN Binding requests instead of relayed data.
# Traffic stays on loopback; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-4}
PACKETS=${PACKETS:-40000}
SIZE=${SIZE:-200}
WINDOW=${WINDOW:-32}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-relay}
SB_PORT=${SB_PORT:-34780}
S1_PORT=${S1_PORT:-34776}
SM_PORT=${SM_PORT:-34784}
CT_PORT=${CT_PORT:-34790}

command -v turnserver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; }
cargo build --release --locked -q -p switchboard -p switchboard-smol -p switchboard-benches --bins
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

sb_serve() { # binary port min-port max-port log [flags...]
    local bin=$1 port=$2 lo=$3 hi=$4 log=$5; shift 5
    "target/release/$bin" serve --turn-listen 127.0.0.1:$port --relay-ip 127.0.0.1 \
        --min-port $lo --max-port $hi --user bench:benchpw --allow-loopback-peers --log-level warn \
        --http-listen 127.0.0.1:$((port + 2)) --media-listen 127.0.0.1:0 "$@" >"$tmp/$log" 2>&1 &
    pids+=($!)
}
sb_serve switchboard $SB_PORT 40000 42499 sb.log
sb_serve switchboard $S1_PORT 42500 44999 sb1.log --workers 1
sb_serve switchboard-smol $SM_PORT 35000 39999 smol.log
turnserver -n --listening-ip 127.0.0.1 --listening-port $CT_PORT --relay-ip 127.0.0.1 \
    --min-port 45000 --max-port 49999 --lt-cred-mech --user bench:benchpw --realm switchboard \
    --allow-loopback-peers --no-tls --no-dtls --no-cli --no-stun-backward-compatibility \
    --log-file "$tmp/coturn.log" --simple-log >/dev/null 2>&1 &
pids+=($!)
sleep 1
# Each server must still be up (a port taken by something else makes one exit at start).
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a server exited at start:"; cat "$tmp"/*.log; exit 1; }; done
names=("switchboard" "switchboard --workers 1" "switchboard-smol" "coturn")
ports=($SB_PORT $S1_PORT $SM_PORT $CT_PORT)
echo "workers: switchboard $(nproc) (default: one per core), coturn $(ls /proc/${pids[3]}/task | wc -l) threads; mode $MODE, $CLIENTS clients x window $WINDOW, $SIZE-byte payloads"

load() {
    local extra=()
    [ "$MODE" = binding ] && extra=(--binding)
    target/release/turnload --server "127.0.0.1:$1" --user bench:benchpw \
        --clients "$CLIENTS" --packets "$PACKETS" --size "$SIZE" --window "$WINDOW" --max-seconds 60 "${extra[@]}"
}
field() { sed -E "s/.*\"$1\":([0-9]+).*/\1/"; }
# The server's CPU time (user + system, clock ticks) from /proc, read around each run.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

declare -A rate cpu p99 lost
for r in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2 3; do
        t0=$(ticks "${pids[$i]}"); out=$(load "${ports[$i]}"); t1=$(ticks "${pids[$i]}")
        done_=$(echo "$out" | field round_trips)
        per_cpu=$(awk -v n="$done_" -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { if (d > 0) printf "%.0f", n * hz / d; else print 0 }')
        printf '%-24s round %d: %s (per server CPU-second: %s)\n' "${names[$i]}" "$r" "$out" "$per_cpu"
        rate[$i]+="$(echo "$out" | field round_trips_per_sec) "; cpu[$i]+="$per_cpu "
        p99[$i]+="$(echo "$out" | field rtt_p99_us) "; lost[$i]+="$(echo "$out" | field lost) "
    done
done
median() { printf '%s\n' $@ | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
sum() { printf '%s\n' $@ | awk '{s+=$1} END {print s+0}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "-" }'; }
mct=$(median ${rate[3]}); cct=$(median ${cpu[3]})
echo "medians over $ROUNDS rounds ($MODE; round trips/s, each relayed round trip = 2 relayed packets):"
for i in 0 1 2 3; do
    m=$(median ${rate[$i]}); c=$(median ${cpu[$i]})
    printf '  %-24s %8s/s (x%s coturn)  per server CPU-second %8s (x%s coturn)  p99 %s us  lost %s\n' \
        "${names[$i]}" "$m" "$(ratio "$m" "$mct")" "$c" "$(ratio "$c" "$cct")" "$(median ${p99[$i]})" "$(sum ${lost[$i]})"
done
