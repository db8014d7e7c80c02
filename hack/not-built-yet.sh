#!/usr/bin/env bash
# Says that a Makefile target's capability does not exist yet, and fails.
set -euo pipefail
echo "make $1: not available yet. Missing: $2." >&2
echo "See README.md (Status) for what works today." >&2
exit 1
