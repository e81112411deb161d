#!/bin/sh
# Example launch script for examples/profiles/script.toml: the variables of the profile
# are in the environment; the port is also the first argument. `exec` keeps the server
# in pv-launch's process group and on the launch channel (stdin/stdout).
echo "start-demo-server.sh: $GREETING (client $PV_CLIENT_HOST, ParaView $PV_VERSION_FULL)" >&2
exec pv-demo-server --server-port "$1" --bind-address 127.0.0.1
