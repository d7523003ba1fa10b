#!/bin/sh
# systemctl for a throwaway root that has no init (tests/ops/throwaway_root.py installs it as
# /usr/local/sbin/systemctl there). It does what install.sh asks of systemd, for cashloop.service
# only: enable/disable as the [Install] symlink, start as the unit's User= running its ExecStart=
# in its WorkingDirectory=, with each LoadCredential=NAME:PATH of the drop-ins copied to
# $CREDENTIALS_DIRECTORY, stop by KillSignal (SIGTERM), then SIGKILL after TimeoutStopSec. Every
# call is appended to /var/log/systemctl-stub.log.
set -eu

units=/etc/systemd/system
pidfile=/run/cashloop-stub.pid
credentials=/run/credentials/cashloop.service
echo "systemctl $*" >>/var/log/systemctl-stub.log

quiet=0
args=""
for arg in "$@"; do
    case $arg in
    --quiet | -q) quiet=1 ;;
    --*) ;;
    *) args="$args $arg" ;;
    esac
done
# shellcheck disable=SC2086 # word splitting wanted: the remaining words are the command and unit
set -- $args
command=${1:-}
unit=${2:-cashloop.service}

alive() {
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/stat" ] || return 1
    # A zombie (exited, not yet reaped by the namespace's init) is not running.
    state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    [ "$state" != Z ]
}

start() {
    if alive; then
        return 0
    fi
    file=$units/$unit
    exec_start=$(sed -n 's/^ExecStart=//p' "$file")
    user=$(sed -n 's/^User=//p' "$file")
    workdir=$(sed -n 's/^WorkingDirectory=//p' "$file")
    rm -rf "$credentials"
    mkdir -p "$credentials"
    for conf in "$units/$unit.d"/*.conf; do
        [ -f "$conf" ] || continue
        sed -n 's/^LoadCredential=//p' "$conf" | while IFS=: read -r name path; do
            cp "$path" "$credentials/$name"
        done
    done
    chown -R "$user:" "$credentials"
    chmod -R u=rX,go= "$credentials"
    cd "$workdir"
    umask "$(sed -n 's/^UMask=//p' "$file")"
    # shellcheck disable=SC2086 # ExecStart is a command line: split it into words
    CREDENTIALS_DIRECTORY=$credentials JOURNAL_STREAM=stub setpriv --reuid="$user" --regid="$user" \
        --init-groups $exec_start >>/var/log/cashloop-service.log 2>&1 &
    echo $! >"$pidfile"
}

stop() {
    alive || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    waited=0
    while alive && [ "$waited" -lt 600 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if alive; then
        kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

case $command in
daemon-reload) ;;
enable)
    mkdir -p "$units/multi-user.target.wants"
    ln -sfn "$units/$unit" "$units/multi-user.target.wants/$unit"
    ;;
disable) rm -f "$units/multi-user.target.wants/$unit" ;;
is-enabled)
    if [ -L "$units/multi-user.target.wants/$unit" ]; then
        [ "$quiet" = 1 ] || echo enabled
    else
        [ "$quiet" = 1 ] || echo disabled
        exit 1
    fi
    ;;
is-active)
    if alive; then
        [ "$quiet" = 1 ] || echo active
    else
        [ "$quiet" = 1 ] || echo inactive
        exit 3
    fi
    ;;
start) start ;;
stop) stop ;;
restart)
    stop
    start
    ;;
*)
    echo "systemctl stub: $command is not emulated" >&2
    exit 1
    ;;
esac
