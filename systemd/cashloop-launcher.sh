#!/bin/sh
# The `cashloop` command of an installed release: install.sh puts it at
# /opt/cashloop/releases/<n>/bin/cashloop (and /usr/local/bin/cashloop points at the current one).
# It runs this release's code (<release>/app, sync, backups) with its virtualenv (<release>/venv).
#
# Run as root, it runs the command as the service user instead, with the service's credentials
# (/etc/cashloop/credentials, what the unit's LoadCredential= passes in) copied to a private
# directory for the one command: `sudo cashloop sync` then behaves as the service would, and
# leaves no root-owned file in /var/lib/cashloop. CASHLOOP_AS_ROOT=1 runs it as root after all.
set -eu

release=$(dirname "$(dirname "$(readlink -f "$0")")")
python=$release/venv/bin/python
service_user=${CASHLOOP_USER:-cashloop}
credentials=${CASHLOOP_CREDENTIALS:-/etc/cashloop/credentials}

if [ ! -x "$python" ]; then
    echo "cashloop: $python is missing; reinstall with install.sh" >&2
    exit 1
fi
export PYTHONPATH="$release"

if [ "$(id -u)" -ne 0 ] || [ "${CASHLOOP_AS_ROOT:-0}" = 1 ]; then
    exec "$python" -m app.cli "$@"
fi

private=$(mktemp -d /run/cashloop-credentials.XXXXXX)
trap 'rm -rf "$private"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
if [ -d "$credentials" ]; then
    for file in "$credentials"/*; do
        [ -f "$file" ] && cp "$file" "$private/"
    done
fi
chown -R "$service_user:" "$private"
chmod -R u=rX,go= "$private"
status=0
CREDENTIALS_DIRECTORY=$private setpriv --reuid="$service_user" --regid="$service_user" --init-groups \
    "$python" -m app.cli "$@" || status=$?
exit "$status"
