#!/usr/bin/env bash
# Checks the test prerequisites listed in scripts/prerequisites (one list, read
# by `make test` and .ci/run). What is missing is installed with apt-get when we
# are root and apt-get is there; otherwise this stops at once with one line
# naming the command to run. PREREQS_LIST names another list (the tests of this
# script use it).
set -u
list=${PREREQS_LIST:-"$(dirname "$0")/prerequisites"}

# present CHECK: a command in PATH or in the usual bin directories (mosquitto
# lives in /usr/sbin, which a user's PATH often lacks), or an absolute path.
present() {
  case $1 in
  /*) [ -e "$1" ] ;;
  *)
    command -v "$1" >/dev/null 2>&1 && return 0
    local d
    for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
      [ -x "$d/$1" ] && return 0
    done
    return 1
    ;;
  esac
}

missing() {
  local check pkg rest
  while read -r check pkg rest; do
    case $check in '' | '#'*) continue ;; esac
    present "$check" || printf '%s\n' "$pkg"
  done <"$list" | sort -u | tr '\n' ' ' | sed 's/ $//'
}

if [ ! -r "$list" ]; then
  echo "prereqs: cannot read $list" >&2
  exit 2
fi
need=$(missing)
[ -z "$need" ] && exit 0

cmd="apt-get install -y $need"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "prereqs: the tests need $need; install them first: sudo $cmd" >&2
  exit 1
fi
echo "prereqs: installing $need (apt-get)" >&2
log=$(mktemp)
if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  rm -f "$log"
  echo "prereqs: apt-get failed (above); run it yourself: $cmd" >&2
  exit 1
fi
rm -f "$log"
need=$(missing)
if [ -n "$need" ]; then
  echo "prereqs: still missing after apt-get: $need" >&2
  exit 1
fi
