#!/bin/sh
# Routing for nginx stream with `proxy_bind ... transparent` (socksgate-stream.conf).
#
#   transparent-routing.sh balancer INSTANCES_CIDR   on the nginx host
#   transparent-routing.sh instance BALANCER_IP      on each socksgate instance
#
# nginx connects to the instances from the client's own address. The instances' answers to that
# address (source port 1080, TCP and UDP) and their ICMP errors must come back through the
# balancer, and the balancer must hand them to nginx's local sockets instead of forwarding them:
# it marks what belongs to nginx's connections (conntrack's reply direction, which takes in the
# ICMP errors about them) and routes marked packets to itself. Conntrack also reassembles IP fragments first, so
# large datagrams are matched whole (a port match alone misses every fragment after the first).
# The ICMP errors matter: they tell nginx that an instance is gone, so it ends that client's UDP
# session and takes the instance out.
#
# Everything the instances send back on connections through this host is taken as nginx's: if the
# host also routes other traffic that the instances answer, narrow the rules.
#
# Environment: MARK (default 1) and TABLE (default 100) if those are taken on the host; PORT
# (default 1080) for the socksgate port. Needs iproute2 and nftables; run as root.
set -eu
mark=${MARK:-1}
table=${TABLE:-100}
port=${PORT:-1080}

case "${1:-}" in
balancer)
  instances=${2:?usage: $0 balancer INSTANCES_CIDR}
  nft -f - <<NFT
table ip socksgate_transparent
delete table ip socksgate_transparent
table ip socksgate_transparent {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    ip saddr $instances ct direction reply meta mark set $mark
  }
}
NFT
  ip rule add fwmark "$mark" lookup "$table"
  ip route replace local 0.0.0.0/0 dev lo table "$table"
  ;;
instance)
  balancer=${2:?usage: $0 instance BALANCER_IP}
  # Only what answers clients goes through the balancer; the relay's traffic to targets (from
  # other ports) keeps the instance's own routes.
  ip rule add ipproto tcp sport "$port" lookup "$table"
  ip rule add ipproto udp sport "$port" lookup "$table"
  ip rule add ipproto icmp lookup "$table"
  ip route replace default via "$balancer" table "$table"
  ;;
*)
  echo "usage: $0 balancer INSTANCES_CIDR | instance BALANCER_IP" >&2
  exit 2
  ;;
esac
