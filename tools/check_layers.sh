#!/usr/bin/env bash
# The engine's layer rule, checked on the built objects: a layer calls only
# itself and the layers its link line names (transitively), never one above.
# Run by the ctest `layers` (engine/CMakeLists.txt passes the layers).
#
#   tools/check_layers.sh --src engine/src \
#       --layer NAME DEPS OBJECTS ...   DEPS and OBJECTS comma-separated, DEPS "-" if none
#
# Checks, for every layer L:
#  - each undefined symbol of L's objects (nm -u) that some layer defines is
#    defined in L or in a layer L may call;
#  - each '#include "M/..."' in engine/src/L/ names L or a layer L may call.
# Prints every violation and exits 1; exits 0 with a one-line summary.
set -euo pipefail

src=""
names=()
declare -A deps objs
while [ $# -gt 0 ]; do
    case "$1" in
        --src) src=$2; shift 2 ;;
        --layer)
            names+=("$2")
            deps[$2]=${3/#-/}
            objs[$2]=$4
            shift 4
            ;;
        *) echo "check_layers.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ ${#names[@]} -gt 0 ] || { echo "check_layers.sh: no --layer given" >&2; exit 2; }

# allowed[L]: L's DEPS, closed transitively (space-separated, padded).
declare -A allowed
closure() {
    local todo=(${deps[$1]//,/ }) seen=" " d
    while [ ${#todo[@]} -gt 0 ]; do
        d=${todo[0]}
        todo=("${todo[@]:1}")
        [[ $seen == *" $d "* ]] && continue
        [ -n "${deps[$d]+x}" ] || { echo "check_layers.sh: $1 depends on unknown layer '$d'" >&2; exit 2; }
        seen+="$d "
        todo+=(${deps[$d]//,/ })
    done
    allowed[$1]=$seen
}
for l in "${names[@]}"; do closure "$l"; done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# defs: "symbol layer object"; uses: "symbol layer object"
: >"$tmp/defs"
: >"$tmp/uses"
nobj=0
for l in "${names[@]}"; do
    IFS=, read -ra list <<<"${objs[$l]}"
    for o in "${list[@]}"; do
        [ -f "$o" ] || { echo "check_layers.sh: object '$o' of layer $l not found (build first)" >&2; exit 2; }
    done
    nobj=$((nobj + ${#list[@]}))
    # nm -A: "path: [value] type symbol" (two nm runs per layer)
    nm -A -g --defined-only "${list[@]}" |
        awk -v l="$l" '{ o = $1; sub(/:[^:\/]*$/, "", o); n = split(o, p, "/"); print $NF, l, p[n] }' >>"$tmp/defs"
    nm -A -u "${list[@]}" |
        awk -v l="$l" '{ o = $1; sub(/:[^:\/]*$/, "", o); n = split(o, p, "/"); print $NF, l, p[n] }' >>"$tmp/uses"
done

bad=0
calls=0
# join uses with defs on the symbol
while read -r sym ul uo dl do_; do
    [ "$ul" = "$dl" ] && continue
    calls=$((calls + 1))
    if [[ ${allowed[$ul]} != *" $dl "* ]]; then
        echo "layers: $ul/$uo calls $sym, defined in $dl/$do_: $ul may call only:${allowed[$ul]:- (nothing)}"
        bad=$((bad + 1))
    fi
done < <(awk 'NR == FNR { def[$1] = $2 " " $3; next } ($1 in def) { print $1, $2, $3, def[$1] }' \
    "$tmp/defs" "$tmp/uses")

if [ -n "$src" ]; then
    for l in "${names[@]}"; do
        [ -d "$src/$l" ] || continue
        while IFS=: read -r file line inc; do
            m=${inc#*\"}
            m=${m%%/*}
            [ -n "${deps[$m]+x}" ] || continue # not a layer folder
            if [ "$m" != "$l" ] && [[ ${allowed[$l]} != *" $m "* ]]; then
                echo "layers: $file:$line includes \"${inc#*\"}: $l may use only:${allowed[$l]:- (nothing)}"
                bad=$((bad + 1))
            fi
        done < <(grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[a-z_]*/' "$src/$l"/*.[ch] 2>/dev/null || true)
    done
fi

if [ $bad -gt 0 ]; then
    echo "layers: $bad upward call(s) or include(s); see README's layout table" >&2
    exit 1
fi
echo "layers: ${#names[@]} layers, $nobj objects, $calls cross-layer calls, all downward"
