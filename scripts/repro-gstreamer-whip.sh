#!/usr/bin/env bash
# Reproduces why Debian 12's simple-whip-client (GStreamer 1.22) cannot publish into Switchboard yet, for
# whoever takes this on (README, "WHIP and WHEP"). Not part of the test suite: it is expected to end with
# "DTLS failed".
#
# What it works around, and what it cannot:
#   1. whip-client links libsoup 2, and libnice (through libgupnp-igd, for UPnP) pulls in libsoup 3: libsoup
#      aborts the process at start. A no-op libgupnp-igd with the four symbols libnice uses, on
#      LD_LIBRARY_PATH, avoids it.
#   2. libnice gathers no candidates on loopback: two veth ends in a private network namespace give it some,
#      and the server's media port is bound on one of them.
#   3. Not worked around: the DTLS handshake. GStreamer 1.22 uses an RSA certificate; str0m 0.25's DTLS (dimpl)
#      takes ECDSA client certificates only, and answers alert 40 (handshake failure).
# Needs root (a network namespace) and: apt-get install simple-whip-client gstreamer1.0-plugins-{good,bad} gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p switchboard
work=$(mktemp -d)
cat > "$work/igd.c" <<'EOF'
/* No-op libgupnp-igd: libnice links it for UPnP, which is not needed here. */
#include <stddef.h>
void *gupnp_simple_igd_thread_new(void) { return NULL; }
unsigned long gupnp_simple_igd_get_type(void) { return 0; }
void gupnp_simple_igd_add_port(void *a, const char *b, unsigned c, const char *d, unsigned e, unsigned f, const char *g) {}
void gupnp_simple_igd_remove_port_local(void *a, const char *b, const char *c, unsigned d) {}
EOF
cc -shared -fPIC -Wl,-soname,libgupnp-igd-1.0.so.4 -o "$work/libgupnp-igd-1.0.so.4" "$work/igd.c"
server=$PWD/target/debug/switchboard
unshare --net bash -c "
  set -e
  ip link set lo up
  ip link add v0 type veth peer name v1
  ip addr add 10.99.0.1/24 dev v0; ip addr add 10.99.0.2/24 dev v1
  ip link set v0 up; ip link set v1 up
  $server serve --http-listen 127.0.0.1:18080 --media-listen 10.99.0.1:0 --whip-token repro > $work/server.log 2>&1 &
  sleep 1
  LD_LIBRARY_PATH=$work timeout 10 whip-client -o -u http://127.0.0.1:18080/whip/repro -t repro \
    -A 'audiotestsrc is-live=true ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=100 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100' \
    -V 'videotestsrc is-live=true ! videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96' \
    2>&1 | grep -E 'WHIP|ERR' || true
  curl -s 127.0.0.1:18080/stats | python3 -c 'import json,sys; print(\"server whip counters:\", json.load(sys.stdin)[\"whip\"])'
  kill %1
"
echo "logs in $work"
