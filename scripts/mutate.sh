#!/usr/bin/env bash
# Mutation testing (issue 14) with gremlins v0.6.0 and .gremlins.yaml:
# the credential engine (internal/credential), then the request path
# (internal/gateway). Each run fails below 90% efficacy.
#
#   scripts/mutate.sh [engine|gateway]...            gremlins unleash
#   scripts/mutate.sh --by-hand [engine|gateway]...  the same mutants (gremlins'
#       dry run lists them), each applied by mutate_apply.py to a scratch
#       copy of the module and tested with `go test -tags mutation
#       -failfast`, MUTATE_JOBS copies side by side (default 2). On a
#       loaded machine gremlins reports mutants TIMED OUT that fail in
#       seconds by hand (MUTATION.md); this mode gives every mutant a
#       verdict: KILLED, LIVED or HANG (no answer in MUTATE_TIMEOUT s).
#       MUTATE_ONLY='sniff\.go|scrub\.go:3[5-9][0-9]:' runs only the
#       mutants whose file:line:col matches.
#
#   go install github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
set -euo pipefail
cd "$(dirname "$0")/.."
GREMLINS=${GREMLINS:-$(command -v gremlins || echo "$HOME/go/bin/gremlins")}
# A mutant's cost is mostly its build: skip go test's vet step (test.sh
# runs vet once) and the linker's DWARF (a quarter of linking Caddy).
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-vet=off -ldflags=-w"
byhand=
if [ "${1:-}" = --by-hand ]; then byhand=1; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(engine gateway)

# shard runs one share of the mutants in its own copy of the module.
shard() {
  local dir=$1 list=$2 out=$3 copy
  copy=$(mktemp -d)
  tar --exclude=./.git --exclude=./sdktest/node/node_modules -cf - . | tar -xf - -C "$copy"
  while read -r _ typ _ loc; do
    IFS=: read -r file line col <<<"$loc"
    local f="$copy/$dir/$file" r
    local m
    # A failed test run is a kill only if the mutant was really in place:
    # a copy that is gone (or a mutant that does not apply) is an ERROR,
    # never a KILLED.
    if ! cp "$f" "$f.orig" || ! m=$(./scripts/mutate_apply.py "$f" "$line" "$col" "$typ"); then
      echo "ERROR $typ $file:$line:$col :: not applied" >>"$out"
      continue
    fi
    if (cd "$copy" && timeout -k 10 "${MUTATE_TIMEOUT:-300}" go test -tags mutation -failfast -count=1 "./$dir" >/dev/null 2>&1); then
      r=LIVED
    elif [ $? = 124 ]; then r=HANG; else r=KILLED; fi
    mv "$f.orig" "$f" || r=ERROR
    echo "$r $typ $file:$line:$col :: $m" >>"$out"
  done <"$list"
  rm -rf "$copy"
}

for t in "${targets[@]}"; do
  case $t in
  engine) dir=internal/credential ;;
  gateway | reqpath) dir=internal/gateway ;; # reqpath: its name before the move
  *) echo "unknown target $t (engine, gateway)"; exit 2 ;;
  esac
  start=$(date +%s)
  if [ -z "$byhand" ]; then
    echo "== gremlins: $t (./$dir)"
    # The JSON result lists every mutant with its status, for MUTATION.md.
    nice -n 10 "$GREMLINS" unleash --config .gremlins.yaml \
      --output "${MUTATE_OUT:-${TMPDIR:-/tmp}}/gremlins-$t.json" "./$dir"
  else
    echo "== by hand: $t (./$dir)"
    work=$(mktemp -d)
    # MUTATE_ONLY (an extended regex on file:line:col) runs a part only.
    "$GREMLINS" unleash --config .gremlins.yaml --dry-run "./$dir" | grep RUNNABLE |
      grep -E -- "${MUTATE_ONLY:-.}" >"$work/all" || true
    jobs=${MUTATE_JOBS:-2}
    for i in $(seq 0 $((jobs - 1))); do
      awk -v n="$jobs" -v i="$i" 'NR % n == i' "$work/all" >"$work/list$i"
      : >"$work/out$i"
      nice -n 10 bash -c "$(declare -f shard); shard '$dir' '$work/list$i' '$work/out$i'" &
    done
    wait
    cat "$work"/out* | sort -t' ' -k3,3V >"${MUTATE_OUT:-${TMPDIR:-/tmp}}/byhand-$t.txt"
    count() { cat "$work"/out* | awk -v s="$1" '$1 == s {n++} END {print n + 0}'; }
    k=$(count KILLED) l=$(count LIVED) h=$(count HANG) e=$(count ERROR)
    grep -h '^LIVED' "$work"/out* || true
    echo "== $t: killed $k, lived $l, hung $h, not applied $e; efficacy $(( 100 * k / (k + l > 0 ? k + l : 1) ))%"
    rm -rf "$work"
    [ "$e" = 0 ] || { echo "$e mutants not applied"; exit 1; }
    [ $(( 100 * k )) -ge $(( 90 * (k + l) )) ] || { echo "below 90%"; exit 1; }
  fi
  echo "== $t: $(( $(date +%s) - start )) s"
done
