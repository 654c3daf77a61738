#!/usr/bin/env bash
# Mutation testing (issue 14) with gremlins v0.6.0 and .gremlins.yaml:
# the credential engine, then the request path. Each run fails below 90%
# efficacy. Usage: ./mutate.sh [engine|reqpath]...
#   go install github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
set -euo pipefail
cd "$(dirname "$0")"
GREMLINS=${GREMLINS:-$(command -v gremlins || echo "$HOME/go/bin/gremlins")}
# A mutant's cost is mostly its build: skip go test's vet step (test.sh
# runs vet once) and the linker's DWARF (a quarter of linking Caddy).
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-vet=off -ldflags=-w"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(engine reqpath)
for t in "${targets[@]}"; do
  case $t in
  engine) dir=./internal/credential ;;
  reqpath) dir=. ;;
  *) echo "unknown target $t (engine, reqpath)"; exit 2 ;;
  esac
  echo "== gremlins: $t ($dir)"
  start=$(date +%s)
  # The JSON result lists every mutant with its status, for MUTATION.md.
  nice -n 10 "$GREMLINS" unleash --config .gremlins.yaml \
    --output "${MUTATE_OUT:-${TMPDIR:-/tmp}}/gremlins-$t.json" "$dir"
  echo "== $t: $(( $(date +%s) - start )) s"
done
