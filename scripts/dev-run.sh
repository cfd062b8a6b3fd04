#!/bin/sh
# `make run`: start the gateway in the foreground with the development config.
set -eu
cd "$(dirname "$0")/.."
CONF=${1:-etc/dev.conf}
BIN=build/bin
LISTEN=$(sed -n 's/^listen *= *//p' "$CONF" | head -n1)
cat <<MSG
mxferry: starting with $CONF (foreground; Ctrl-C stops it)
  SMTP listens on: $LISTEN
  Set it up in another terminal:
    $BIN/mxferryctl -c $CONF domain add example.com
    $BIN/mxferryctl -c $CONF address add you@your-mailbox.example --verified
    $BIN/mxferryctl -c $CONF rule add example.com --to hello@example.com --forward you@your-mailbox.example
    $BIN/mxferryctl -c $CONF rule list
    $BIN/mxferryctl -c $CONF status
  Then send mail to hello@example.com through $LISTEN (swaks, smtplib, telnet).
  The API and dashboard: http://127.0.0.1:8025/ with a token from
    $BIN/mxferryctl -c $CONF token add me
MSG
exec "$BIN/mxferryd" -c "$CONF" -f
