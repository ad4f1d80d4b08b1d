#!/usr/bin/env bash
# Fails when a tracked file is over the size limit (default 2 MB): generated data stays out of git.
# Usage: .ci/check_sizes.sh [max_bytes]
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-$((2 * 1024 * 1024))}
status=0
while IFS= read -r -d '' path; do
    [[ -f $path && ! -L $path ]] || continue  # deleted in the work tree, or a symlink
    size=$(stat -c %s -- "$path")
    if ((size > limit)); then
        echo "tracked file over $limit bytes: $path ($size bytes)" >&2
        status=1
    fi
done < <(git ls-files -z)
exit $status
