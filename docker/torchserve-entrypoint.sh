#!/bin/sh
# The torchserve container's main process. `torchserve --start` daemonises, so this script stays in the
# foreground for it: it stops TorchServe cleanly on SIGTERM (docker stop) and exits non-zero when TorchServe
# dies, so that the restart policy brings the container back. Extra arguments go to `torchserve --start`.
set -e
TS_CONFIG="${TS_CONFIG:-/home/model-server/config.properties}"
MODEL_STORE="${MODEL_STORE:-/home/model-server/model-store}"
# TorchServe keeps its pid file in Python's temp dir (TMPDIR, else TEMP, else /tmp).
PIDFILE="${TMPDIR:-${TEMP:-/tmp}}/.model_server.pid"

torchserve --start --ncs --ts-config "$TS_CONFIG" --model-store "$MODEL_STORE" "$@"
trap 'torchserve --stop; exit 0' TERM INT
while [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; do
    sleep 1
done
echo "torchserve exited" >&2
exit 1
