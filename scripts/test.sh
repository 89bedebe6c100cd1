#!/usr/bin/env bash
# Runs every test of the project, on a fresh machine as on a developer's.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh turn       # only tests whose name matches "turn"
#
# It installs what the tests need when it is missing (coturn's clients, Chromium,
# playwright-core, openssl, curl, Prometheus's Python parser), builds
# once, then runs the whole suite inside a fresh network namespace that has only
# a loopback interface, so no test can send traffic anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v turnutils_uclient >/dev/null 2>&1 || need_apt+=(coturn)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The NAT tests (tests/tests/nat_namespaces.rs) put iptables NAT routers in network namespaces.
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The recording tests make media with ffmpeg and read the recordings back with ffprobe.
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
# The /metrics test parses the page with Prometheus's own Python parser.
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need_apt+=(python3-prometheus-client)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "test.sh: installing ${need_apt[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# coturn's package starts a turnserver on 3478 on some systems; ours must not share a port with it.
if command -v systemctl >/dev/null 2>&1; then systemctl stop coturn >/dev/null 2>&1 || true; fi

# The browser tests drive Chromium with playwright-core (never its bundled browser download), and load
# medooze's WHIP/WHEP client (whip-whep) into their WHIP and WHEP pages.
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/whip-whep ]; then
    echo "test.sh: installing playwright-core and whip-whep for the browser tests"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# Build everything once (binaries, tests, benches, examples); the namespace below has no network.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-run

run_tests() {
    cargo test --workspace --locked --offline -- "$@"
}

if [ "${IN_NETNS:-}" = 1 ]; then
    run_tests "$@"
elif [ "$(id -u)" -eq 0 ] && unshare --net true 2>/dev/null; then
    export -f run_tests
    IN_NETNS=1 unshare --net bash -c 'ip link set lo up && run_tests "$@"' bash "$@"
else
    echo "test.sh: cannot create a network namespace (needs root); running on the host's loopback" >&2
    run_tests "$@"
fi
