#!/bin/bash
# `make quickstart` on a fresh clone, every output line prefixed with the time it appeared, for
# benchmarks/quickstart_profile.py. Usage: benchmarks/quickstart_timed.sh [REPO] [WORKDIR]
#   REPO: the repository to clone (default: this one); WORKDIR: where the clone goes (default /tmp/msl-quickstart).
set -euo pipefail
repo=${1:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
work=${2:-/tmp/msl-quickstart}
rm -rf "$work"
git clone -q "$repo" "$work"
cd "$work"
start=$(date +%s)
make quickstart 2>&1 | while IFS= read -r line; do printf '%s %s\n' "$(date +%H:%M:%S)" "$line"; done > timed.log
echo "$(date +%H:%M:%S) END-TO-END $(($(date +%s) - start)) s" >> timed.log
echo "$work/timed.log"
