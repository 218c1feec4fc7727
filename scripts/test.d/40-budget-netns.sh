#!/usr/bin/env bash
# Real-network check of hum-budget's throttler (issue 7): two network namespaces joined by a veth
# pair, the uplink rate-limited with tc tbf (netem/fq_codel are not in every kernel; tbf is). A UDP
# echo "game" flow and a relay upload paced by hum-budget share the bottleneck; see
# crates/hum-budget/examples/netns_throttle.rs for the phases and the pass/fail bar.
# Needs root (CI has it); skips with a notice otherwise. Takes about a minute.
source "$(dirname "$0")/../lib.sh"
cd "$HUM_ROOT"

if [ "$(id -u)" -ne 0 ]; then
  note "40-budget-netns: not root, skipping the network-namespace test"
  exit 0
fi
ensure_apt iproute2

LINK_MBIT="${HUM_BUDGET_NETNS_MBIT:-10}"
NS_A="humbudget-a-$$"
NS_B="humbudget-b-$$"
SERVER_PID=""
RELAY_PID=""
RELAY_DATA=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$RELAY_PID" ]; then kill "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; fi
  if [ -n "$RELAY_DATA" ]; then rm -rf "$RELAY_DATA"; fi
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

step "building the netns checks and the relay"
cargo build -q --locked -p hum-budget --example netns_throttle --example netns_probe
cargo build -q --locked --workspace --bins  # same features as scripts/test: a no-op there
OUT="${CARGO_TARGET_DIR:-$HUM_ROOT/target}/debug"
BIN="$OUT/examples/netns_throttle"

step "namespaces $NS_A <-> $NS_B, uplink tbf ${LINK_MBIT} Mbit/s"
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "hbva$$" type veth peer name "hbvb$$"
ip link set "hbva$$" netns "$NS_A"
ip link set "hbvb$$" netns "$NS_B"
ip -n "$NS_A" addr add 10.77.0.1/24 dev "hbva$$"
ip -n "$NS_B" addr add 10.77.0.2/24 dev "hbvb$$"
ip -n "$NS_A" link set lo up
ip -n "$NS_B" link set lo up
ip -n "$NS_A" link set "hbva$$" up
ip -n "$NS_B" link set "hbvb$$" up
# A home router's upload: 10 Mbit/s with a deep (400 ms) buffer, the "bufferbloat" that makes a
# game lag when something else fills the uplink.
ip netns exec "$NS_A" tc qdisc add dev "hbva$$" root tbf rate "${LINK_MBIT}mbit" burst 6kb latency 400ms

ip netns exec "$NS_B" "$BIN" server 10.77.0.2 &
SERVER_PID=$!
sleep 0.5

step "throttler: game flow + relay upload through the bottleneck (about 50 s)"
ip netns exec "$NS_A" timeout 120 "$BIN" client 10.77.0.2 "$LINK_MBIT"

step "bandwidth auto-detect: hum-relay's /probe across the same bottleneck"
RELAY_DATA="$(mktemp -d)"
ip netns exec "$NS_B" "$OUT/hum-relay" --listen 10.77.0.2:7700 --data "$RELAY_DATA" >/dev/null 2>&1 &
RELAY_PID=$!
for _ in $(seq 1 50); do
  ip netns exec "$NS_A" bash -c 'exec 3<>/dev/tcp/10.77.0.2/7700' 2>/dev/null && break
  sleep 0.2
done
ip netns exec "$NS_A" timeout 60 "$OUT/examples/netns_probe" ws://10.77.0.2:7700/probe "$LINK_MBIT"
