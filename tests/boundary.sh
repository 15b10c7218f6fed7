#!/bin/sh
# The architecture's boundary, checked on the source tree: plugins,
# formats and the code they link (common/) reach the core only through the
# public contract include/hvqconv/plugin.h. Checks:
#  1. the compiler, with the include path plugins are built with
#     ($HVQ_PLUGIN_CPPFLAGS), cannot find any core header;
#  2. no file there names a core header by a relative path.
# 3. the core has no model code: no llama_ symbol or tokenizer in core/.
# 4. the core reaches plugins only through the registry: its build rules
#    name no file or include directory of plugins/ or formats/, and no core
#    file includes one by path.
set -u
top=${HVQ_TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
cc=${HVQ_CC:-${CC:-cc}}
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hvq-boundary-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for h in "$top"/core/*.h; do
    name=$(basename "$h")
    printf '#include "%s"\nint x;\n' "$name" >"$tmp/probe.c"
    # shellcheck disable=SC2086
    if $cc ${HVQ_PLUGIN_CPPFLAGS:-} -fsyntax-only "$tmp/probe.c" 2>/dev/null; then
        echo "FAIL: core/$name is reachable with the plugins' include path"
        fail=1
    fi
done
# shellcheck disable=SC2086
printf '#include "plugin.h"\n#include <hvqconv/plugin.h>\nint x;\n' >"$tmp/probe.c"
if ! $cc ${HVQ_PLUGIN_CPPFLAGS:-} -fsyntax-only "$tmp/probe.c"; then
    echo "FAIL: plugin.h is not reachable with the plugins' include path"
    fail=1
fi
bad=$(grep -rnE '#[[:space:]]*include[[:space:]]*[<"]([^>"]*/)?core/' \
    "$top/plugins" "$top/formats" "$top/common" --include='*.c' --include='*.h' || true)
if [ -n "$bad" ]; then
    echo "FAIL: a plugin, format or common file includes by a path into the core:"
    echo "$bad"
    fail=1
fi
models=$(grep -lE '\bhvq_llama_|\bllama_tok' "$top"/core/*.c "$top"/core/*.h 2>/dev/null || true)
if [ -n "$models" ]; then
    echo "FAIL: model code in the core: $models"
    fail=1
fi
# the core's own rules (libhvqcore_la_*, hvqconv_*), continuation lines
# joined; tests may compile a plugin's sources against their reference
into=$( (awk '/\\$/ { sub(/\\$/, ""); line = line $0; next }
              { line = line $0; print FILENAME ": " line; line = "" }' \
        "$top"/core/*.mk "$top"/core/local.mk |
    grep -E ': *(libhvqcore_la|hvqconv)_[A-Z_]+ *\+?=' | grep -E '(plugins|formats)/';
    grep -nE '#[[:space:]]*include[[:space:]]*[<"]([^>"]*/)?(plugins|formats)/' \
    "$top"/core/*.c "$top"/core/*.h) || true)
if [ -n "$into" ]; then
    echo "FAIL: the core reaches into a plugin's files:"
    echo "$into"
    fail=1
fi
[ $fail = 0 ] && echo "ok: plugins see only plugin.h; no model code in core/; the core builds no plugin code"
exit $fail
