#!/usr/bin/env bash
# The project's test command (the README's): gofmt, vet, and the
# race-enabled suite, which starts real store servers (memcached,
# redis-server, MariaDB, PostgreSQL) and Prometheus on loopback, and a
# headless Chromium for the status page, installed here with
# apt-get when missing, so a fresh machine needs nothing by hand.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
# The status page's tests drive a headless Chromium (integration/).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  # The tests start their own servers on free ports: keep the packages'
  # services from starting on the default ports (policy-rc.d says no).
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  rc=0
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?
  [ -z "$made_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
fi
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi
go vet ./...
# Tests that need a server binary skip without one (they fail under CI);
# their packages' TestMains list them in this file, printed loudly last.
export WECHAT_SKIP_REPORT
WECHAT_SKIP_REPORT=$(mktemp)
skip_report() {
  if [ -s "$WECHAT_SKIP_REPORT" ]; then
    echo "=================================================================="
    cat "$WECHAT_SKIP_REPORT"
    echo "=================================================================="
  fi
  rm -f "$WECHAT_SKIP_REPORT"
}
trap skip_report EXIT
go test -race -count=1 -timeout 30m ./...
# Real SDKs, unmodified, through a real Caddy (sdktest/ is a module of its
# own, so the SDKs never become the gateway's dependencies). The Node SDK
# test skips without node and its package, except under CI.
if command -v npm >/dev/null 2>&1 && [ ! -d sdktest/node/node_modules ]; then
  (cd sdktest/node && npm ci --no-audit --no-fund) || echo "npm ci failed: the wechat-api test will skip"
fi
(cd sdktest && go vet ./... && go test -count=1 -timeout 10m ./...)
# Each fuzz target briefly (Go fuzzes one target per command). The limit is
# a count, not a duration: go1.26's fuzz coordinator can fail a run that
# ends on a wall-clock -fuzztime with a spurious "context deadline
# exceeded" (go.dev/issue/75804, fixed in go1.27).
for target in FuzzErrcode FuzzSniff FuzzRewriteQuery FuzzPlaceholder; do
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-5000x}" ./internal/gateway
done
go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime "${FUZZTIME:-5000x}" .
go test -run '^$' -fuzz '^FuzzOpenToken$' -fuzztime "${FUZZTIME:-5000x}" ./internal/credential
go test -run '^$' -fuzz '^FuzzDecrypt$' -fuzztime "${FUZZTIME:-5000x}" ./internal/wxcrypto
go test -run '^$' -fuzz '^FuzzCallback$' -fuzztime "${FUZZTIME:-5000x}" ./internal/componentcb
go test -run '^$' -fuzz '^FuzzMessagePush$' -fuzztime "${FUZZTIME:-5000x}" ./internal/push
