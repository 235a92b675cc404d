# Sourced by bench scripts: sets FASTGW_CMD (how to start the gateway) unless
# the caller set it: the `fastgw` console script when installed, else
# `python3 -m fastgw` from this checkout (PYTHONPATH extended when needed).
# Needs ROOT (the repository root) set by the caller.
if [ -z "${FASTGW_CMD:-}" ]; then
    if command -v fastgw >/dev/null 2>&1; then
        FASTGW_CMD=fastgw
    else
        FASTGW_CMD="python3 -m fastgw"
        if ! (cd / && python3 -c 'import fastgw.cli') >/dev/null 2>&1; then
            export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        fi
    fi
fi
