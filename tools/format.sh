#!/usr/bin/env bash
# Format the tree's C sources with clang-format (.clang-format at the root).
#
#   tools/format.sh            rewrite every tracked .c / .h file in place
#   tools/format.sh --check    change nothing; list the files that are not
#                              formatted and exit 1 if there is one (CI)
#   tools/format.sh FILE...    format (or, after --check, check) just these
#
# Uses $CLANG_FORMAT, else clang-format-14, else clang-format; other major
# versions than 14 may format differently, so the check warns about them.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
cf=${CLANG_FORMAT:-}
if [ -z "$cf" ]; then
    if command -v clang-format-14 >/dev/null 2>&1; then cf=clang-format-14
    elif command -v clang-format >/dev/null 2>&1; then cf=clang-format
    else
        echo "format.sh: clang-format not found: install 'clang-format' (version 14)" >&2
        exit 2
    fi
fi
ver=$("$cf" --version | sed -n 's/.*version \([0-9]*\).*/\1/p')
[ "$ver" = 14 ] || echo "format.sh: warning: $cf is version $ver, the tree is formatted with 14" >&2

if [ $# -gt 0 ]; then
    files=("$@")
else
    mapfile -t files < <(git ls-files '*.c' '*.h')
fi
[ ${#files[@]} -gt 0 ] || exit 0

if [ $check = 0 ]; then
    "$cf" -i --style=file "${files[@]}"
    exit 0
fi
bad=0
for f in "${files[@]}"; do
    if ! "$cf" --style=file "$f" | cmp -s - "$f"; then
        echo "format.sh: $f is not formatted (run tools/format.sh $f)"
        bad=$((bad + 1))
    fi
done
if [ $bad -gt 0 ]; then
    echo "format.sh: $bad file(s) not formatted" >&2
    exit 1
fi
echo "format.sh: ${#files[@]} files formatted"
