#!/bin/sh
# Run a test under valgrind (memcheck): fail on any memory error or a
# definite leak; skip (77) when valgrind is not installed.
# Usage: run_valgrind.sh SUPPRESSIONS|- EXECUTABLE [ARGS...]
# ("-": no suppressions; the fleet's own code runs without any.)
supp="$1"
shift
if ! command -v valgrind >/dev/null 2>&1; then
    echo "SKIP: valgrind not installed"
    exit 77
fi
if [ "$supp" = "-" ]; then
    exec valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
        --num-callers=30 "$@"
fi
exec valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --suppressions="$supp" --num-callers=30 "$@"
