#!/usr/bin/env bash
# timed.sh OUT CMD [ARG...]
#
# Runs CMD under GNU time and writes one line "<wall_seconds> <max_rss_kb> <exit_code>" to OUT.
# Wall time comes from bash's $EPOCHREALTIME (no fork, microsecond resolution); the peak RSS is
# GNU time's "Maximum resident set size", which for a shell loop or a set of background jobs is
# the largest single process among CMD and all its descendants (not the sum).
# Exits with CMD's exit code.
# shellcheck source=SCRIPTDIR/../scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
out=$1
shift
t0=$EPOCHREALTIME
/usr/bin/time -f '%M' -o "$out.rss" "$@"
rc=$?
t1=$EPOCHREALTIME
rss=$(tail -n 1 "$out.rss" 2>/dev/null)
case $rss in '' | *[!0-9]*) rss=0 ;; esac
printf '%s %d %d\n' "$(elapsed_s "$t0" "$t1")" "$rss" "$rc" >"$out"
exit "$rc"
