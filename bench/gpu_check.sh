#!/usr/bin/env bash
# Issue 15's GPU check in one command: environment, the whole pipeline, speed against the HF recipe, resume.
#
#   bash bench/gpu_check.sh                      # on the lent GPU machine (H200): full sizes, about 6-8 minutes
#   bash bench/gpu_check.sh --device cpu --tiny  # here: tiny sizes everywhere, a smoke run of the whole script
#
# Everything printed also goes to $OUT/gpu_check.log ($OUT: the device tool's folder; ./gpu_check_out when unset),
# the figures to $OUT/gpu_check.json, every subprocess's output to $OUT/gpu_check_subprocess.log.
# Python packages the pipeline imports and the machine lacks (datasets and its dill / multiprocess / xxhash,
# ruamel.yaml) are installed from the wheels carried in bench/wheels/ into a temporary folder on PYTHONPATH; nothing
# is fetched from the network. dvclive and vl-convert-python are not carried: without them pretrain writes its live
# summary as plain JSON and evaluate skips its PNG charts, each with one warning (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export OUT

main() {
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
echo "gpu_check.sh: $PY ($($PY --version 2>&1)); OUT=$OUT"

SITE="$(mktemp -d /tmp/gpu_check_site.XXXXXX)"
missing=()
for pair in datasets:datasets dill:dill multiprocess:multiprocess xxhash:xxhash ruamel_yaml:ruamel.yaml; do
    wheel="${pair%%:*}" module="${pair#*:}"
    if ! $PY -c "import $module" 2>/dev/null; then
        missing+=(bench/wheels/"$wheel"-*.whl)
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing carried wheels (no network) into $SITE: ${missing[*]##*/}" \
         "($(du -cb "${missing[@]}" | tail -1 | cut -f1) bytes)"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${missing[@]}"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "all packages the pipeline imports are installed; no wheel installed"
fi
local rc=0
$PY bench/gpu_check.py "$@" || rc=$?
rm -rf "$SITE"
return $rc
}

main "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
