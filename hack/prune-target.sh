#!/usr/bin/env bash
# Frees disk taken by stale build outputs: every build of a changed workspace crate leaves its
# previous binaries (test binaries are hundreds of MB each) and incremental state behind, and
# cargo never removes them. Removes the workspace's own artifacts and incremental directories
# under the Cargo target directory that no build has written for PRUNE_DAYS days (default 2);
# dependencies are left alone. A removed artifact that is still wanted is simply built again.
#   hack/prune-target.sh            # prune, then show the free space
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TARGET=${CARGO_TARGET_DIR:-$MINIAUTOML_CACHE/cargo-target}
DAYS=${PRUNE_DAYS:-2}
[ -d "$TARGET" ] || exit 0
before=$(du -sk "$TARGET" | cut -f1)
# The workspace's crate and target names, as rustc names their files (dashes as underscores).
names=$(cd "$REPO_ROOT" && cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
  python3 -c 'import json, sys
meta = json.load(sys.stdin)
print("\n".join(sorted({t["name"].replace("-", "_") for p in meta["packages"] for t in p["targets"]})))')
[ -n "$names" ] || { echo "[prune] cannot list the workspace's targets (cargo metadata)" >&2; exit 1; }
# deps/: NAME-<16 hex>[.ext]; incremental/: NAME-<base-36 hash>.
pattern="^(lib)?($(echo "$names" | paste -sd '|'))-[0-9a-z]{13,16}(\\.|$)"
# prune AGE: removes the workspace's artifacts older than AGE (find's -mmin, minutes).
prune() {
  for profile in "$TARGET"/debug "$TARGET"/release; do
    [ -d "$profile" ] || continue
    for dir in deps incremental; do
      [ -d "$profile/$dir" ] || continue
      find "$profile/$dir" -mindepth 1 -maxdepth 1 -mmin "+$1" -printf '%f\n' | grep -E "$pattern" |
        while read -r stale; do rm -rf "${profile:?}/$dir/$stale"; done || true
    done
  done
}
prune $((DAYS * 24 * 60))
# Every checkout path builds its own copies of the workspace's crates (tens of GiB of test
# binaries): on a disk short of space (a day of clean-clone runs) the artifacts not written
# in the last hour go too, as the local cluster needs room (hack/cluster.sh up refuses below 4 GiB).
free_gib=$(df -Pk "$TARGET" | awk 'NR == 2 {print int($4 / 1048576)}')
if [ "$free_gib" -lt "${PRUNE_MIN_FREE_GIB:-25}" ]; then
  echo "[prune] only $free_gib GiB free: removing the workspace's artifacts older than an hour" >&2
  prune 60
fi
after=$(du -sk "$TARGET" | cut -f1)
echo "[prune] $TARGET: $((before / 1048576)) GiB -> $((after / 1048576)) GiB; $(df -h "$TARGET" | awk 'NR == 2 {print $4}') free" >&2
