#!/bin/sh
# Installs what hvqconv needs to build and test on Debian 12 (or Ubuntu):
# a C toolchain, autotools, libyaml, libarchive, zlib and Check; clang with
# its runtime libraries (libFuzzer, ASan, UBSan) for the fuzz targets; and
# python3 with numpy for python/hvqconv.py and its test (tests/pyload.sh).
# Idempotent.
set -eu
pkgs="build-essential autoconf automake libtool pkg-config libyaml-dev libarchive-dev zlib1g-dev check clang libclang-rt-dev python3 python3-numpy"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing
