#!/bin/sh
# Reacts to targets going down, without polling: subscribes to `up == 0` on a running promflow
# (the server of the README's first command by default) and prints a line for each change.
# Usage: examples/subscribe.sh [server-url] [promflow binary]
server=${1:-http://127.0.0.1:9090}
promflow=${2:-promflow}
"$promflow" subscribe "$server" 'up == 0' | while IFS= read -r line; do
  case "$line" in
    *'"type":"snapshot"'*) echo "watching; down now: $line" ;;
    *'"type":"change"'*) echo "$(date -u +%H:%M:%S) a target changed: $line" ;;
    *'"type":"error"'*) echo "refused: $line" >&2; exit 1 ;;
  esac
done
