#!/bin/sh
# Create the Redis Cluster once (deploy/docker-compose.cluster.yml's
# cluster-init, kubernetes/valkey-cluster.yaml's Job):
#   cluster-create.sh host:port host:port ...   (CLUSTER_REPLICAS per primary, default 1)
# Waits until every node answers; does nothing if the first node already
# knows other nodes (a cluster exists: running it again is safe); else
# creates the cluster and waits until it reports cluster_state:ok.
set -eu
replicas="${CLUSTER_REPLICAS:-1}"
first_host="${1%:*}"
first_port="${1##*:}"

for node in "$@"; do
  until valkey-cli -h "${node%:*}" -p "${node##*:}" ping 2>/dev/null | grep -q PONG; do
    echo "waiting for $node"
    sleep 1
  done
done

known=$(valkey-cli -h "$first_host" -p "$first_port" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "${known:-1}" -gt 1 ]; then
  echo "$1 already knows $known nodes: the cluster exists, nothing to do"
  exit 0
fi

# The nodes MEET each other by IP: resolve the names (a name keeps working
# for clients: the nodes announce it, cluster-preferred-endpoint-type hostname).
addresses=""
for node in "$@"; do
  ip=$(getent ahostsv4 "${node%:*}" | awk '{ print $1; exit }')
  if [ -z "$ip" ]; then
    echo "cannot resolve ${node%:*}" >&2
    exit 1
  fi
  addresses="$addresses $ip:${node##*:}"
done
# shellcheck disable=SC2086  # one word per address
valkey-cli --cluster create $addresses --cluster-replicas "$replicas" --cluster-yes

until valkey-cli -h "$first_host" -p "$first_port" cluster info | tr -d '\r' | grep -qx 'cluster_state:ok'; do
  echo "waiting for cluster_state:ok"
  sleep 1
done
echo "cluster ready"
