#!/usr/bin/env bash
# install.sh: install or upgrade Cashloop on Debian 12 (or Ubuntu 22.04+) from this source tree.
#
#   sudo ./install.sh             install, or upgrade in place; safe to run again
#   sudo ./install.sh --start     ... and (re)start the service
#   ./install.sh --dry-run        show every step and what it would run; changes nothing
#
# Each step checks first and does nothing when it is already done:
#   1. Debian packages: python3 (>= 3.11), python3-venv, pango and fonts for PDF rendering
#   2. system user and group `cashloop` (no shell, no home of its own)
#   3. /var/lib/cashloop (0700, the database and backups), /etc/cashloop (0750 root:cashloop)
#   4. /opt/cashloop/.venv with the pinned requirements (only when they changed) and this release
#   5. /etc/cashloop/config.toml from config.example.toml, mode 0600, never overwritten
#   6. the systemd unit; daemon-reload and enable (start only with --start)
#
# Not yet (comes with the operations work): a backup before upgrading a running install, the
# backup timer, a reverse proxy/TLS, uninstall.
set -euo pipefail

SRC=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
APP_DIR=/opt/cashloop
VENV=$APP_DIR/.venv
CONF_DIR=/etc/cashloop
CONFIG=$CONF_DIR/config.toml
STATE_DIR=/var/lib/cashloop
UNIT_SRC=$SRC/systemd/cashloop.service
UNIT_DST=/etc/systemd/system/cashloop.service
SERVICE_USER=cashloop
APT_PACKAGES=(python3 python3-venv libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core)

dry_run=0
start=0

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0"
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

step() {
    printf '\n==> %s\n' "$*"
}

ok() {
    printf '    ok: %s\n' "$*"
}

# Run a command, or in a dry run only show it.
run() {
    local shown
    shown=$(printf '%q ' "$@")
    if ((dry_run)); then
        printf '    would run: %s\n' "${shown% }"
    else
        printf '    + %s\n' "${shown% }"
        "$@"
    fi
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

requirements_hash() {
    cat "$SRC/requirements.txt" "$SRC/pyproject.toml" | sha256sum | cut -d' ' -f1
}

parse_args() {
    while (($#)); do
        case $1 in
        --dry-run) dry_run=1 ;;
        --start) start=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
        esac
        shift
    done
}

check_host() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        die "this installer supports Debian and Ubuntu (apt/dpkg) only"
    fi
    [[ -f $SRC/requirements.txt && -f $SRC/pyproject.toml && -f $UNIT_SRC ]] ||
        die "run it from a complete Cashloop source tree ($SRC lacks requirements.txt, pyproject.toml or the unit)"
    if ((!dry_run)) && ((EUID != 0)); then
        die "must run as root (sudo ./install.sh), or try ./install.sh --dry-run"
    fi
}

install_packages() {
    step "Debian packages: ${APT_PACKAGES[*]}"
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        run apt-get update
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
        ok "all installed"
    fi
    if command -v python3 >/dev/null; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "python3 is $(python3 -V 2>&1); Cashloop needs 3.11 or newer (Debian 12 has it)"
        ok "$(python3 -V)"
    elif ((!dry_run)); then
        die "python3 is missing after the package step"
    fi
}

create_user() {
    step "system user $SERVICE_USER"
    if getent passwd "$SERVICE_USER" >/dev/null; then
        ok "exists"
    else
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "Cashloop payment portal" "$SERVICE_USER"
    fi
}

create_dirs() {
    step "directories $STATE_DIR, $CONF_DIR, $APP_DIR"
    # install -d is idempotent and also repairs owner and mode on an existing directory.
    run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
    run install -d -m 0755 -o root -g root "$APP_DIR" "$APP_DIR/backups"
}

install_venv() {
    step "virtualenv $VENV"
    if [[ -x $VENV/bin/python ]]; then
        ok "exists ($("$VENV/bin/python" -V 2>&1))"
    else
        run python3 -m venv "$VENV"
    fi
    local stamp=$VENV/.cashloop-requirements.sha256 want have=""
    want=$(requirements_hash)
    [[ -f $stamp ]] && have=$(<"$stamp")
    if [[ $have == "$want" ]]; then
        ok "requirements unchanged"
    else
        run "$VENV/bin/pip" install --disable-pip-version-check --quiet -r "$SRC/requirements.txt"
        if ((dry_run)); then
            printf '    would write: %s\n' "$stamp"
        else
            printf '%s\n' "$want" >"$stamp"
        fi
    fi
    # The application itself is reinstalled every time: that is what an upgrade is.
    run "$VENV/bin/pip" install --disable-pip-version-check --quiet --no-deps --force-reinstall "$SRC"
    run install -m 0644 "$SRC/backups/backup.py" "$APP_DIR/backups/backup.py"
    if [[ -f $SRC/README.md ]]; then
        run install -m 0644 "$SRC/README.md" "$APP_DIR/README.md"
    fi
}

install_config() {
    step "configuration $CONFIG (mode 0600)"
    if [[ -e $CONFIG ]]; then
        ok "exists, left as it is; owner and mode repaired"
        run chown "$SERVICE_USER:$SERVICE_USER" "$CONFIG"
        run chmod 0600 "$CONFIG"
    elif [[ -f $SRC/config.example.toml ]]; then
        # 0600 from the first byte: the file will hold Stripe and PSA secrets.
        run install -m 0600 -o "$SERVICE_USER" -g "$SERVICE_USER" "$SRC/config.example.toml" "$CONFIG"
    elif ((dry_run)); then
        printf '    would fail: %s/config.example.toml is missing\n' "$SRC"
    else
        die "$SRC/config.example.toml is missing; cannot create $CONFIG"
    fi
}

install_unit() {
    step "systemd unit $UNIT_DST"
    if [[ -f $UNIT_DST ]] && cmp -s "$UNIT_SRC" "$UNIT_DST"; then
        ok "up to date"
    else
        run install -m 0644 -o root -g root "$UNIT_SRC" "$UNIT_DST"
    fi
    if [[ -d /run/systemd/system ]] || ((dry_run)); then
        run systemctl daemon-reload
        run systemctl enable cashloop.service
        if ((start)); then
            run systemctl restart cashloop.service
        fi
    else
        printf '    note: systemd is not running here; unit installed, not enabled\n'
    fi
}

main() {
    parse_args "$@"
    check_host
    if ((dry_run)); then
        printf 'Dry run: nothing will be changed. Source: %s\n' "$SRC"
    fi
    install_packages
    create_user
    create_dirs
    install_venv
    install_config
    install_unit
    cat <<EOF

Done$( ((dry_run)) && printf ' (dry run)').
Next:
  1. edit $CONFIG (Stripe keys, PSA and accounting connections, mail server)
  2. sudo -u $SERVICE_USER $VENV/bin/cashloop check-config $CONFIG
  3. systemctl start cashloop && systemctl status cashloop
EOF
}

main "$@"
