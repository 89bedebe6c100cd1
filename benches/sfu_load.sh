#!/usr/bin/env bash
# SFU forwarding under load: rooms of bots (benches/src/bin/sfuload.rs, the
# core's str0m Bot over real WebSocket + UDP) against the release `switchboard`
# binary, on loopback.
#
#   ./benches/sfu_load.sh                                   # rooms of 4, 16 and 25; 3 rounds
#   SIZES="4 8" ROOMS=2 WINDOW=5 ROUNDS=1 ./benches/sfu_load.sh
#   VIDEO_PPS=30 SIMULCAST=1 ./benches/sfu_load.sh
#   WORKERS="1 2" ROOMS=2 SIZES=10 ./benches/sfu_load.sh   # a server per worker count, alternated
#
# One server for the whole run, on its own ports, with the SFU room capacity
# raised so the largest room fits. Each round runs every room size once
# (alternating sizes, so a slow moment of the shared machine is spread over
# all of them); the medians per size are printed at the end. The load generator
# shares the machine's cores with the server: read its CPU next to the server's.
# Traffic stays on loopback; every run is bounded (--max-seconds) and the server
# is killed by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"4 16 25"}
ROOMS=${ROOMS:-1}
ROUNDS=${ROUNDS:-3}
WINDOW=${WINDOW:-10}
WARMUP=${WARMUP:-3}
VIDEO_PPS=${VIDEO_PPS:-100}
THREADS=${THREADS:-}
# Worker counts to compare, one server each ("default": the server's own choice, one per core).
WORKERS=${WORKERS:-default}
SIMULCAST=${SIMULCAST:-}
HTTP_PORT=${HTTP_PORT:-38180}
TURN_PORT=${TURN_PORT:-34978}
MEDIA_PORT=${MEDIA_PORT:-37982}
# Deep socket buffers so that a burst the server falls behind on is measured as delay, not lost at its socket.
UDP_BUFFER=${UDP_BUFFER:-4194304}

max=0
for s in $SIZES; do [ "$s" -gt "$max" ] && max=$s; done

cargo build --release --locked -q -p switchboard -p switchboard-benches --bins
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

servers=()
i=0
for w in $WORKERS; do
    extra=()
    [ "$w" != default ] && extra=(--workers "$w")
    target/release/switchboard serve --turn-listen 127.0.0.1:$((TURN_PORT + 10 * i)) --http-listen 127.0.0.1:$((HTTP_PORT + 10 * i)) \
        --media-listen 127.0.0.1:$((MEDIA_PORT + 10 * i)) --sfu-room-capacity "$max" --udp-buffer "$UDP_BUFFER" --log-level warn \
        "${extra[@]}" >"$tmp/sb$i.log" 2>&1 &
    pids+=($!)
    servers+=($!)
    for _ in $(seq 1 50); do
        grep -q "is serving" "$tmp/sb$i.log" 2>/dev/null && break
        kill -0 "${servers[$i]}" 2>/dev/null || { cat "$tmp/sb$i.log"; exit 1; }
        sleep 0.1
    done
    i=$((i + 1))
done
labels=($WORKERS)

load() { # participants server-index
    local extra=()
    [ -n "$THREADS" ] && extra+=(--threads "$THREADS")
    [ -n "$SIMULCAST" ] && extra+=(--simulcast)
    target/release/sfuload --http 127.0.0.1:$((HTTP_PORT + 10 * $2)) --server-pid "${servers[$2]}" --rooms "$ROOMS" --participants "$1" \
        --video-pps "$VIDEO_PPS" --warmup "$WARMUP" --seconds "$WINDOW" \
        --max-seconds "$(awk -v w="$WARMUP" -v s="$WINDOW" 'BEGIN {print w + s + 45}')" "${extra[@]}" 2>"$tmp/err"
}
field() { sed -E "s/.*\"$1\":([^,}]*).*/\1/"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A res
for r in $(seq 1 "$ROUNDS"); do
    for p in $SIZES; do
        for i in "${!servers[@]}"; do
            out=$(load "$p" "$i") || { cat "$tmp/err"; exit 1; }
            echo "${ROOMS}x$p workers ${labels[$i]} round $r: $out"
            res[$p.$i]+="$out"$'\n'
        done
    done
done

echo
fmt='%-8s %-8s %7s %9s %8s %9s %8s %8s %9s %9s %7s %7s %11s %9s\n'
printf "$fmt" room workers tracks delivery% worst% fwd_pps p50_ms p99_ms srv_cpu_s us/packet user sys tracks/core gen_cpu_s
for p in $SIZES; do for i in "${!servers[@]}"; do
    col() { median $(printf '%s' "${res[$p.$i]}" | grep . | field "$1"); }
    printf "$fmt" "${ROOMS}x$p" "${labels[$i]}" "$(col subscriber_tracks)" "$(col delivery_pct)" \
        "$(col min_bot_delivery_pct)" "$(col forwarded_pps)" "$(col latency_p50_ms)" "$(col latency_p99_ms)" \
        "$(col server_cpu_s)" "$(col server_cpu_us_per_forwarded)" "$(col server_user_us_per_forwarded)" \
        "$(col server_sys_us_per_forwarded)" "$(col subscriber_tracks_per_core)" "$(col loadgen_cpu_s)"
done; done
echo "(tracks/core: subscriber-tracks per core of server CPU, only where delivery >= 99.9%; null otherwise)"
echo "(medians over $ROUNDS round(s) of ${WINDOW} s windows after ${WARMUP} s warm-up; ${VIDEO_PPS} video + 50 audio packets/s per bot)"
