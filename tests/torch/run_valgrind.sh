#!/bin/sh
# Run a shim test under valgrind (memcheck): fail on any memory error or a
# definite leak; skip (77) when valgrind is not installed.
# Usage: run_valgrind.sh SUPPRESSIONS EXECUTABLE [ARGS...]
supp="$1"
shift
if ! command -v valgrind >/dev/null 2>&1; then
    echo "SKIP: valgrind not installed"
    exit 77
fi
exec valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --suppressions="$supp" --num-callers=30 "$@"
