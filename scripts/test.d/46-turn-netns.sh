#!/usr/bin/env bash
# "Hide my IP" across a real network (issue 16): two network namespaces that can reach each other
# only through the TURN server. The relay and coturn listen on one address of the root namespace
# (10.81.0.1, on lo); each namespace has a veth pair to the root namespace and a default route
# there, and an `unreachable` route for the other namespace's subnet (the root namespace does not
# forward either). A UDP probe from one namespace to the other must get nothing through, then the
# #[ignore]d test in tests/tests/relay_only.rs runs a relay-only call between them: it connects,
# relayed on both sides, and each member hears the other.
# Needs root (CI has it); skips with a notice otherwise. Takes about a minute.
source "$(dirname "$0")/../lib.sh"
cd "$HUM_ROOT"

if [ "$(id -u)" -ne 0 ]; then
  note "46-turn-netns: not root, skipping the two-namespace relay-only test"
  exit 0
fi
ensure_apt iproute2 coturn python3

SERVER_IP=10.81.0.1
NS_A="humturn-a-$$"
NS_B="humturn-b-$$"
A_IP=10.81.1.2
B_IP=10.81.2.2
cleanup() {
  ip link del "htra$$" 2>/dev/null || true
  ip link del "htrb$$" 2>/dev/null || true
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  ip addr del "$SERVER_IP/32" dev lo 2>/dev/null || true
}
trap cleanup EXIT INT TERM

step "building the relay_only test and the binaries"
cargo build -q --locked --workspace --bins # same features as scripts/test: a no-op there
cargo test -q --locked --workspace --test relay_only --no-run

step "namespaces $NS_A ($A_IP) and $NS_B ($B_IP); relay and TURN at $SERVER_IP"
ip addr add "$SERVER_IP/32" dev lo
# ns NAME IF IP HOST_IP OTHER_SUBNET: a namespace behind a veth pair, its default route via the
# root namespace, the other namespace's subnet unreachable.
ns() {
  local name="$1" ifc="$2" ip="$3" host_ip="$4" other="$5"
  ip netns add "$name"
  ip link add "$ifc" type veth peer name "${ifc}p"
  ip link set "${ifc}p" netns "$name"
  ip addr add "$host_ip/24" dev "$ifc"
  ip link set "$ifc" up
  ip -n "$name" addr add "$ip/24" dev "${ifc}p"
  ip -n "$name" link set lo up
  ip -n "$name" link set "${ifc}p" up
  # A default route: webrtc-rs's mDNS socket cannot join its multicast group without one.
  ip -n "$name" route add default via "$host_ip"
  ip -n "$name" route add unreachable "$other"
}
ns "$NS_A" "htra$$" "$A_IP" 10.81.1.1 10.81.2.0/24
ns "$NS_B" "htrb$$" "$B_IP" 10.81.2.1 10.81.1.0/24

# probe FROM_NS TO_IP [TO_NS]: 1 if a UDP datagram sent from FROM_NS reaches a listener on TO_IP
# (in TO_NS, else in the root namespace), 0 if nothing arrives in 2 s.
probe() {
  local from="$1" to_ip="$2" out
  local in_ns=()
  [ -n "${3:-}" ] && in_ns=(ip netns exec "$3")
  out="$(mktemp)"
  "${in_ns[@]}" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 40999)); s.settimeout(2)
try:
    s.recvfrom(100); print(1)
except socket.timeout:
    print(0)
' "$to_ip" >"$out" &
  local listener=$!
  sleep 0.3
  ip netns exec "$from" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    try:
        s.sendto(b"direct?", (sys.argv[1], 40999))
    except OSError:
        pass
' "$to_ip"
  wait "$listener"
  cat "$out"
  rm -f "$out"
}
# The probe works (the service address answers), and finds no direct path either way.
[ "$(probe "$NS_A" "$SERVER_IP")" = 1 ] || die "46-turn-netns: $NS_A cannot reach $SERVER_IP"
[ "$(probe "$NS_B" "$SERVER_IP")" = 1 ] || die "46-turn-netns: $NS_B cannot reach $SERVER_IP"
[ "$(probe "$NS_A" "$B_IP" "$NS_B")" = 0 ] || die "46-turn-netns: $NS_A reaches $NS_B directly"
[ "$(probe "$NS_B" "$A_IP" "$NS_A")" = 0 ] || die "46-turn-netns: $NS_B reaches $NS_A directly"
note "no direct path between $NS_A and $NS_B; both reach $SERVER_IP"

step "a relay-only call between the two namespaces"
HUM_TURN_NETNS_SERVER="$SERVER_IP" HUM_TURN_NETNS_A="$NS_A" HUM_TURN_NETNS_A_IP="$A_IP" \
  HUM_TURN_NETNS_B="$NS_B" HUM_TURN_NETNS_B_IP="$B_IP" \
  timeout 300 cargo test -q --locked --workspace --test relay_only -- --ignored --nocapture \
  relay_only_across_two_namespaces
