#!/usr/bin/env bash
# A blue-green switch as people write it by hand: the "naive script" of bench figure 1.
#
#   naive-blue-green.sh switch   NAMESPACE NEW_COLOUR IMAGE   # apply, rollout status, patch the selector
#   naive-blue-green.sh release  NAMESPACE NEW_COLOUR IMAGE   # switch, then scale the old colour to 0 at once
#   naive-blue-green.sh cleanup  NAMESPACE OLD_COLOUR         # scale a colour to 0
#   naive-blue-green.sh rollback NAMESPACE OLD_COLOUR         # scale it back up, rollout status,
#                                                             # patch back, scale the other to 0 at once
#
# kubectl talks to the cluster of $KUBECONFIG, context ${KUBE_CONTEXT:-lab-primary}. The lab's API
# server has no /openapi, hence --validate=false. Nothing here waits for the data plane: that is
# the point of the figure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/manifests/web-deployment.yaml"
op="${1:?usage: $0 switch|release|cleanup|rollback NAMESPACE COLOUR [IMAGE]}"
ns="${2:?namespace}"
colour="${3:?colour}"
k() { kubectl --context "${KUBE_CONTEXT:-lab-primary}" -n "$ns" "$@"; }
other() { if [ "$1" = blue ]; then echo green; else echo blue; fi; }
stamp() { echo "naive: $(date +%s.%N) $*"; }  # the bench reads these lines

switch() {
  local image="${1:?image}"
  stamp "apply web-$colour $image"
  sed -e "s|\${COLOUR}|$colour|g" -e "s|\${IMAGE}|$image|g" "$manifest" | k apply --validate=false -f -
  k rollout status "deployment/web-$colour" --timeout=120s
  stamp "patch web -> $colour"
  k patch svc web -p "{\"spec\":{\"selector\":{\"app\":\"web\",\"color\":\"$colour\"}}}"
}

scale_down() {
  stamp "scale web-$1 to 0"
  k scale "deployment/web-$1" --replicas=0
}

case "$op" in
  switch) switch "${4:-}" ;;
  release) switch "${4:-}"; scale_down "$(other "$colour")" ;;
  cleanup) scale_down "$colour" ;;
  rollback)
    stamp "scale web-$colour to 2"
    k scale "deployment/web-$colour" --replicas=2
    k rollout status "deployment/web-$colour" --timeout=120s
    stamp "patch web -> $colour"
    k patch svc web -p "{\"spec\":{\"selector\":{\"app\":\"web\",\"color\":\"$colour\"}}}"
    scale_down "$(other "$colour")"
    ;;
  *) echo "unknown operation $op" >&2; exit 2 ;;
esac
stamp "done"
