#!/usr/bin/env bash
# The project's test command (the README's): vet, the race-enabled test
# suite against a real memcached, and a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")"
test -z "$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: files above need formatting"; exit 1; }
go vet ./...
go test -race -count=1 -timeout 20m ./...
