#!/usr/bin/env bash
# Set up, build and run cldiffusion on a Debian/Ubuntu machine.
#
#   tools/bootstrap.sh sample    install packages if missing, build, sample a grid of the bundled
#                                model into samples.png (extra arguments go to cld-sample)
#   tools/bootstrap.sh devices   install packages if missing, build, list OpenCL devices
#   tools/bootstrap.sh test      install packages if missing, check the format (tools/format.sh
#                                --check), build, run the test suite; then the
#                                whole suite again under ASan + UBSan (build-asan/) and a smoke run
#                                of each libFuzzer harness (clang, build-fuzz/) and the op tests on
#                                Oclgrind, a simulated GPU that checks memory accesses and races;
#                                CLD_QUICK=1 skips those three
#   tools/bootstrap.sh build     install packages if missing, build
#
# Packages are installed only when some are missing, and only as root or
# through sudo. With CI=true the build treats warnings as errors.
# Environment: BUILD_DIR (default: build), JOBS (default: all cores).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

PACKAGES=(build-essential cmake pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd
          libclblast-dev check libsubunit-dev libstb-dev zlib1g-dev libcjson-dev libjpeg-dev libexif-dev clinfo clang clang-format oclgrind
          openmpi-bin libopenmpi-dev)

say() { printf '==> %s\n' "$*" >&2; }

install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "not a Debian-based system: install the equivalents of: ${PACKAGES[*]}"
        return 0
    fi
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "all packages present"
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            say "missing packages: ${missing[*]}"
            say "not root and no sudo: install them, then run this again"
            return 1
        fi
    fi
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
    local args=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release)
    if [ "${CI:-}" = "true" ]; then args+=(-DCLD_WERROR=ON); fi
    say "configuring: cmake ${args[*]}"
    cmake "${args[@]}"
    say "building with $JOBS jobs"
    cmake --build "$BUILD_DIR" -j "$JOBS"
}

run_tests() {
    say "running tests"
    local rc=0
    ctest --test-dir "$BUILD_DIR" --output-on-failure || rc=$?
    # Each Check test prints "NN%: Checks: X, Failures: Y, Errors: Z"; ctest keeps
    # every test's output in LastTest.log.
    local log="$BUILD_DIR/Testing/Temporary/LastTest.log"
    if [ -f "$log" ]; then
        echo
        echo "Check summary:"
        awk '/^[0-9]+\/[0-9]+ Test: / { name = $3 }
             /^[0-9]+%: Checks: / { printf "  %-28s %s\n", name, $0 }' "$log"
    fi
    return $rc
}

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer (any error
# aborts: -fno-sanitize-recover), then each fuzz harness for a few seconds.
# Only PoCL's ICD is loaded there: Mesa's rusticl, when installed, leaks
# ~200 bytes in its own initialisation, which LeakSanitizer would report in
# every test. use_sigaltstack=0: PoCL's worker threads and ASan's alternate
# signal stack do not mix (crashes inside PoCL otherwise).
run_hardening() {
    local rc=0 pocl=/etc/OpenCL/vendors/pocl.icd
    local env=(ASAN_OPTIONS=use_sigaltstack=0:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
               LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp)
    [ -f "$pocl" ] && env+=(OCL_ICD_VENDORS=$pocl)
    say "building with ASan + UBSan into build-asan"
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLD_SANITIZE=ON >/dev/null
    cmake --build build-asan -j "$JOBS" >/dev/null
    say "running tests under ASan + UBSan"
    env "${env[@]}" ctest --test-dir build-asan --output-on-failure -j "$JOBS" || rc=$?
    if command -v clang >/dev/null 2>&1; then
        say "building the fuzz harnesses (clang) into build-fuzz"
        CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLD_FUZZ=ON \
            -DCLD_BUILD_TESTS=OFF >/dev/null
        cmake --build build-fuzz -j "$JOBS" >/dev/null
        say "fuzz smoke runs"
        env "${env[@]}" ctest --test-dir build-fuzz --output-on-failure || rc=$?
    else
        say "clang not found: fuzz smoke runs skipped"
        rc=1
    fi
    say "op tests on Oclgrind (simulated GPU: out-of-bounds accesses, data races, divergence)"
    tools/oclgrind_tests.sh "$BUILD_DIR" || rc=$?
    return $rc
}

# Every tracked .c / .h file as tools/format.sh (clang-format 14,
# .clang-format) leaves it; in CI a missing clang-format fails too.
check_format() {
    if ! command -v clang-format >/dev/null 2>&1 && ! command -v clang-format-14 >/dev/null 2>&1; then
        say "clang-format not found: format check skipped"
        [ "${CI:-}" != "true" ]
        return
    fi
    say "checking the format (tools/format.sh --check)"
    tools/format.sh --check
}

cmd=${1:-devices}
[ $# -gt 0 ] && shift
case "$cmd" in
sample)
    install_packages
    build
    "$BUILD_DIR/cld-sample" "$@"
    ;;
devices)
    install_packages
    build
    "$BUILD_DIR/cld-devices"
    ;;
test)
    install_packages
    rc=0
    check_format || rc=$?
    build
    run_tests || rc=$?
    if [ "${CLD_QUICK:-0}" != 1 ]; then run_hardening || rc=$?; fi
    exit $rc
    ;;
build)
    install_packages
    build
    ;;
-h | --help | help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    ;;
*)
    echo "usage: $0 [sample|devices|test|build]" >&2
    exit 2
    ;;
esac
