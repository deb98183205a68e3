#!/bin/sh
# Start one node of the Redis Cluster (deploy/docker-compose.cluster.yml,
# kubernetes/valkey-cluster.yaml) with /etc/actionq/cluster-node.conf,
# announcing ANNOUNCE_HOSTNAME (default: `hostname -f`) to clients.
#
# The nodes reach each other by IP, and nodes.conf (in /data) remembers the
# IPs. A container or pod that is re-created gets a new one; when they all
# are (`docker compose down && up`, every pod of the StatefulSet at once) no
# node would find the others. So before starting, the IP of every node
# nodes.conf names (each line carries the node's announced hostname) is
# looked up again; a name that does not resolve yet keeps its old IP, and
# the gossip of the nodes that did find each other corrects it later.
set -eu
announce="${ANNOUNCE_HOSTNAME:-$(hostname -f)}"
conf="${DATA_DIR:-/data}/nodes.conf"
if [ -s "$conf" ]; then
  while read -r id address rest; do
    if [ "$id" != "vars" ]; then
      # address: ip:port@busport,hostname,tls-port=...,shard-id=...
      host=$(echo "$address" | cut -d, -f2)
      ip=$(getent ahostsv4 "$host" 2>/dev/null | awk '{ print $1; exit }') || true
      if [ -n "$host" ] && [ -n "$ip" ]; then
        address="$ip:${address#*:}"
      fi
    fi
    echo "$id $address $rest"
  done < "$conf" > "$conf.resolved"
  mv "$conf.resolved" "$conf"
fi
# The image's entrypoint: as root it makes /data the valkey user's and drops to it.
exec docker-entrypoint.sh valkey-server "${NODE_CONFIG:-/etc/actionq/cluster-node.conf}" \
  --cluster-announce-hostname "$announce" "$@"
