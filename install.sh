#!/usr/bin/env bash
# install.sh: install, upgrade or remove Cashloop on Debian 12 or Ubuntu 24.04, from this source tree.
#
#   sudo ./install.sh                 install, or check and repair an installation; safe to run again
#   sudo ./install.sh --start         ... and (re)start the service
#   sudo ./install.sh --upgrade       switch to this source: new release, backup, migrations, restart,
#                                     health check; back to the previous release if any step fails
#   sudo ./install.sh --uninstall     remove the code and the unit; keep the config and the data
#   sudo ./install.sh --uninstall --purge   ... and the config, the data and the user as well
#   ./install.sh --dry-run [...]      show every step and what it would run; changes nothing
#
# What goes where (each step checks first and does nothing when it is already so):
#   /opt/cashloop/releases/<n>     one directory per installed source (code, bin/cashloop, venv link)
#   /opt/cashloop/current          symlink to the release that runs; /usr/local/bin/cashloop uses it
#   /opt/cashloop/venvs/<hash>     one virtualenv per requirements.txt, shared by releases
#   /etc/cashloop/config.toml      from config.example.toml, 0600 cashloop, never overwritten
#   /etc/cashloop/credentials/     secrets for systemd's LoadCredential= (0700 root; see the unit)
#   /var/lib/cashloop              the database, backups, journal, locks (0700 cashloop)
#   /etc/systemd/system/cashloop.service (+ .d/10-credentials.conf), enabled
# Environment: CASHLOOP_HEALTH_TIMEOUT (seconds an upgraded service has to turn healthy, default 90).
set -euo pipefail

SRC=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
APP_DIR=/opt/cashloop
RELEASES=$APP_DIR/releases
VENVS=$APP_DIR/venvs
CURRENT=$APP_DIR/current
CONF_DIR=/etc/cashloop
CONFIG=$CONF_DIR/config.toml
CRED_DIR=$CONF_DIR/credentials
STATE_DIR=/var/lib/cashloop
UNIT_SRC=$SRC/systemd/cashloop.service
UNIT_DST=/etc/systemd/system/cashloop.service
DROPIN_DIR=/etc/systemd/system/cashloop.service.d
CRED_DROPIN=$DROPIN_DIR/10-credentials.conf
LINK=/usr/local/bin/cashloop
SERVICE=cashloop.service
SERVICE_USER=cashloop
PYTHON=/usr/bin/python3
KEEP_RELEASES=3
HEALTH_TIMEOUT=${CASHLOOP_HEALTH_TIMEOUT:-90}
APT_PACKAGES=(python3 python3-venv util-linux libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0
    fonts-dejavu-core)
# What a release is made of: the hash of these files names the source, so the same tree installs once.
SHIPPED=(app sync backups systemd docs README.md config.example.toml requirements.txt pyproject.toml)

mode=install
dry_run=0
start=0
purge=0

usage() {
    sed -n '2,21s/^# \{0,1\}//p' "$0"
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

note() {
    printf '    note: %s\n' "$*"
}

# Run a command that changes something, or in a dry run only show it.
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

has_systemd() {
    [[ -d /run/systemd/system ]]
}

is_active() {
    has_systemd && systemctl is-active --quiet "$SERVICE"
}

parse_args() {
    while (($#)); do
        case $1 in
        --dry-run) dry_run=1 ;;
        --start) start=1 ;;
        --upgrade) mode=upgrade ;;
        --uninstall) mode=uninstall ;;
        --purge) purge=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
        esac
        shift
    done
    if ((purge)) && [[ $mode != uninstall ]]; then
        die "--purge goes with --uninstall"
    fi
}

check_host() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        die "this installer supports Debian and Ubuntu (apt/dpkg) only"
    fi
    if [[ $mode != uninstall ]]; then
        local f
        for f in requirements.txt pyproject.toml systemd/cashloop.service systemd/cashloop-launcher.sh \
            app/cli.py; do
            [[ -f $SRC/$f ]] || die "run it from a complete Cashloop source tree ($SRC lacks $f)"
        done
    fi
    if ((!dry_run)) && ((EUID != 0)); then
        die "must run as root (sudo ./install.sh), or try ./install.sh --dry-run"
    fi
}

source_hash() {
    local present=() item
    for item in "${SHIPPED[@]}"; do
        [[ -e $SRC/$item ]] && present+=("$item")
    done
    (cd "$SRC" && find "${present[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

requirements_hash() {
    { cat "$SRC/requirements.txt"; "$PYTHON" -V 2>&1; } | sha256sum | cut -c1-16
}

current_release() {
    if [[ -L $CURRENT ]]; then
        basename "$(readlink "$CURRENT")"
    fi
}

release_with_hash() {
    local dir
    for dir in "$RELEASES"/*/; do
        [[ -f $dir.source-sha256 ]] || continue
        if [[ $(<"$dir.source-sha256") == "$1" ]]; then
            basename "$dir"
            return 0
        fi
    done
    return 0
}

next_release_number() {
    local n max=0 dir
    for dir in "$RELEASES"/*/; do
        n=$(basename "$dir")
        [[ $n =~ ^[0-9]+$ ]] && ((n > max)) && max=$n
    done
    printf '%s\n' $((max + 1))
}

install_packages() {
    step "Debian packages: ${APT_PACKAGES[*]}"
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        run apt-get update
        if ((!dry_run)); then
            local policy
            for pkg in "${missing[@]}"; do
                # Ubuntu ships python3-venv in universe: a server with only main enabled has no candidate.
                policy=$(apt-cache policy "$pkg" 2>/dev/null || true)
                if [[ $policy != *"Candidate: "[!\(]* ]]; then
                    die "package $pkg is not available from this system's apt sources; on Ubuntu enable the" \
                        "universe component (add-apt-repository universe), then run install.sh again"
                fi
            done
        fi
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
        ok "all installed"
    fi
    if [[ -x $PYTHON ]]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "$PYTHON is $("$PYTHON" -V 2>&1); Cashloop needs 3.11 or newer (Debian 12 and Ubuntu 24.04 have it)"
        ok "$("$PYTHON" -V)"
    elif ((!dry_run)); then
        die "$PYTHON is missing after the package step"
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

# ensure_dir MODE OWNER GROUP PATH: create it, or repair its owner and mode; silent when right.
ensure_dir() {
    local mode=$1 owner=$2 group=$3 path=$4
    if [[ -d $path ]] && [[ $(stat -c '%a %U %G' "$path") == "${mode#0} $owner $group" ]]; then
        ok "$path"
        return 0
    fi
    run install -d -m "$mode" -o "$owner" -g "$group" "$path"
}

create_dirs() {
    step "directories $STATE_DIR, $CONF_DIR, $APP_DIR"
    ensure_dir 0700 "$SERVICE_USER" "$SERVICE_USER" "$STATE_DIR"
    ensure_dir 0750 root "$SERVICE_USER" "$CONF_DIR"
    ensure_dir 0700 root root "$CRED_DIR"
    ensure_dir 0755 root root "$APP_DIR"
    ensure_dir 0755 root root "$RELEASES"
    ensure_dir 0755 root root "$VENVS"
}

install_config() {
    step "configuration $CONFIG (mode 0600)"
    if [[ -e $CONFIG ]]; then
        if [[ $(stat -c '%a %U %G' "$CONFIG") == "600 $SERVICE_USER $SERVICE_USER" ]]; then
            ok "exists, left as it is"
        else
            run chown "$SERVICE_USER:$SERVICE_USER" "$CONFIG"
            run chmod 0600 "$CONFIG"
        fi
    elif [[ -f $SRC/config.example.toml ]]; then
        # 0600 from the first byte: the file will hold Stripe and PSA secrets.
        run install -m 0600 -o "$SERVICE_USER" -g "$SERVICE_USER" "$SRC/config.example.toml" "$CONFIG"
    else
        die "$SRC/config.example.toml is missing; cannot create $CONFIG"
    fi
}

# The venv for this requirements.txt; made once, shared by every release with the same file.
ensure_venv() {
    local hash dir
    hash=$(requirements_hash)
    dir=$VENVS/$hash
    if [[ -f $dir/.complete ]]; then
        ok "virtualenv $dir"
        return 0
    fi
    # A venv cannot be moved (its scripts name their own path): it is made in place and counts
    # only once .complete is written; an interrupted one is made again.
    if [[ -e $dir ]]; then
        run rm -rf "$dir"
    fi
    run "$PYTHON" -m venv "$dir"
    run "$dir/bin/python" -m pip install --disable-pip-version-check --quiet --no-warn-script-location \
        -r "$SRC/requirements.txt"
    run touch "$dir/.complete"
}

# build_release N: /opt/cashloop/releases/N from this source, complete before it gets its name.
build_release() {
    local n=$1 hash=$2 dir=$RELEASES/$1 tmp=$RELEASES/.$1.partial present=() item
    for item in "${SHIPPED[@]}"; do
        [[ -e $SRC/$item ]] && present+=("$item")
    done
    if ((dry_run)); then
        printf '    would build: %s (source %s, venv %s)\n' "$dir" "$hash" "$VENVS/$(requirements_hash)"
        return 0
    fi
    rm -rf "$tmp"
    mkdir -p "$tmp/bin"
    printf '    + copy %s -> %s\n' "${present[*]}" "$dir"
    (cd "$SRC" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' "${present[@]}") |
        tar -xf - -C "$tmp" --no-same-owner --no-same-permissions
    install -m 0755 "$SRC/systemd/cashloop-launcher.sh" "$tmp/bin/cashloop"
    ln -s "../../venvs/$(requirements_hash)" "$tmp/venv"
    printf '%s\n' "$hash" >"$tmp/.source-sha256"
    # Compiled now, checked by hash: the service cannot write __pycache__ (ProtectSystem=strict).
    "$tmp/venv/bin/python" -m compileall -q --invalidation-mode unchecked-hash "$tmp/app" "$tmp/sync" \
        "$tmp/backups" >/dev/null
    chown -R root:root "$tmp"
    chmod -R u=rwX,go=rX "$tmp"
    mv -T "$tmp" "$dir"
}

release=""

# The release for this source, in $release: the existing one with its hash, or a new one.
release_for_source() {
    local hash
    hash=$(source_hash)
    release=$(release_with_hash "$hash")
    if [[ -n $release ]]; then
        ok "release $release is this source ($hash)"
    else
        release=$(next_release_number)
        ensure_venv
        build_release "$release" "$hash"
    fi
}

switch_to() {
    local n=$1
    if [[ $(current_release) == "$n" ]]; then
        ok "$CURRENT -> releases/$n"
        return 0
    fi
    # rename(2) over the old link: the switch is atomic, a start never sees no release.
    run ln -sfn "releases/$n" "$APP_DIR/.current.new"
    run mv -T "$APP_DIR/.current.new" "$CURRENT"
}

install_code() {
    step "code: $RELEASES, $CURRENT, $LINK"
    local cur hash
    cur=$(current_release)
    if [[ -z $cur ]]; then
        release_for_source
        switch_to "$release"
    else
        hash=$(source_hash)
        if [[ -f $RELEASES/$cur/.source-sha256 && $(<"$RELEASES/$cur/.source-sha256") == "$hash" ]]; then
            ok "release $cur is this source ($hash)"
        else
            note "release $cur runs and this source differs; switch to it with: $0 --upgrade"
        fi
    fi
    if [[ -L $LINK && $(readlink "$LINK") == "$CURRENT/bin/cashloop" ]]; then
        ok "$LINK"
    else
        run ln -sfn "$CURRENT/bin/cashloop" "$LINK"
    fi
}

credentials_dropin() {
    local file name
    for file in "$CRED_DIR"/*; do
        [[ -f $file ]] || continue
        name=$(basename "$file")
        [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || continue
        printf 'LoadCredential=%s:%s\n' "$name" "$file"
    done
}

unit_changed=0

install_unit() {
    step "systemd unit $UNIT_DST"
    if [[ -f $UNIT_DST ]] && cmp -s "$UNIT_SRC" "$UNIT_DST"; then
        ok "up to date"
    else
        run install -m 0644 -o root -g root "$UNIT_SRC" "$UNIT_DST"
        unit_changed=1
    fi
    local lines wanted
    lines=$(credentials_dropin)
    if [[ -n $lines ]]; then
        wanted=$(printf '# Written by install.sh from the files in %s; run it again after adding one.\n[Service]\n%s\n' \
            "$CRED_DIR" "$lines")
        if [[ -f $CRED_DROPIN && $(<"$CRED_DROPIN") == "$wanted" ]]; then
            ok "credentials: $(printf '%s\n' "$lines" | wc -l) in $CRED_DROPIN"
        else
            ensure_dir 0755 root root "$DROPIN_DIR"
            if ((dry_run)); then
                printf '    would write: %s\n' "$CRED_DROPIN"
            else
                printf '    + write %s\n' "$CRED_DROPIN"
                printf '%s\n' "$wanted" >"$CRED_DROPIN"
                chmod 0644 "$CRED_DROPIN"
            fi
            unit_changed=1
        fi
    elif [[ -e $CRED_DROPIN ]]; then
        run rm -f "$CRED_DROPIN"
        unit_changed=1
    else
        ok "no credentials in $CRED_DIR"
    fi
    if ! has_systemd && ((!dry_run)); then
        note "systemd is not running here; unit installed, not enabled"
        return 0
    fi
    if ((unit_changed)); then
        run systemctl daemon-reload
    fi
    if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
        ok "enabled"
    else
        run systemctl enable "$SERVICE"
    fi
}

start_service() {
    if ((start)) && has_systemd; then
        step "start $SERVICE"
        run systemctl restart "$SERVICE"
        run "$CURRENT/bin/cashloop" healthcheck --config "$CONFIG" --wait "$HEALTH_TIMEOUT"
    fi
}

do_install() {
    install_packages
    create_user
    create_dirs
    install_config
    install_code
    install_unit
    start_service
    cat <<EOF

Done$( ((dry_run)) && printf ' (dry run)').
Next:
  1. edit $CONFIG (Stripe keys, PSA and accounting connections, mail server)
  2. cashloop check-config $CONFIG && cashloop doctor
  3. systemctl start cashloop && cashloop healthcheck --wait 60
EOF
}

# -- upgrade --------------------------------------------------------------------------------------

as_release() {
    local n=$1
    shift
    "$RELEASES/$n/bin/cashloop" "$@"
}

rollback() {
    local old=$1 new=$2 backup=$3 restore_db=$4 why=$5
    printf '\n==> upgrade to release %s failed (%s): back to release %s\n' "$new" "$why" "$old" >&2
    if has_systemd; then
        systemctl stop "$SERVICE" || true
    fi
    if ((restore_db)) && [[ -n $backup ]]; then
        # The new release changed the schema; the old one refuses that, so the database goes back
        # to the backup taken just before. What the new release wrote is kept beside it.
        as_release "$new" restore "$backup" --config "$CONFIG" >&2 ||
            die "could not restore $backup: restore it by hand (backups/README.md), then start release $old"
    fi
    ln -sfn "releases/$old" "$APP_DIR/.current.new"
    mv -T "$APP_DIR/.current.new" "$CURRENT"
    install -m 0644 -o root -g root "$RELEASES/$old/systemd/cashloop.service" "$UNIT_DST"
    if has_systemd; then
        systemctl daemon-reload
        if ((was_running)); then
            systemctl start "$SERVICE"
            as_release "$old" healthcheck --config "$CONFIG" --wait "$HEALTH_TIMEOUT" >&2 ||
                die "release $old does not turn healthy either: see journalctl -u cashloop"
        fi
    fi
    die "upgrade to release $new failed ($why); release $old runs again"
}

was_running=0

do_upgrade() {
    install_packages
    create_user
    create_dirs
    install_config
    local old new hash pending backup="" restore_db=0
    old=$(current_release)
    [[ -n $old ]] || die "Cashloop is not installed here; run $0 first"
    hash=$(source_hash)
    if [[ -f $RELEASES/$old/.source-sha256 && $(<"$RELEASES/$old/.source-sha256") == "$hash" ]]; then
        step "upgrade"
        ok "release $old is this source already; nothing to upgrade"
        install_unit
        return 0
    fi
    step "new release"
    release_for_source
    new=$release
    if ((dry_run)); then
        printf '    would check the config, back up, migrate, switch %s to release %s, restart\n' "$CURRENT" "$new"
        return 0
    fi
    step "check $CONFIG with release $new"
    as_release "$new" check-config "$CONFIG" || die "release $new refuses $CONFIG; nothing was changed"
    if is_active; then
        was_running=1
    fi
    if [[ -f $STATE_DIR/cashloop.db ]]; then
        step "stop, back up, migrate"
        pending=$(as_release "$new" doctor --config "$CONFIG" | sed -n 's/.*pending migrations: //p') ||
            die "release $new finds a problem with the installation (above); nothing was changed"
        if ((was_running)); then
            run systemctl stop "$SERVICE"
        fi
        backup=$(as_release "$new" backup --config "$CONFIG" | sed -n 's/^backup: \([^;]*\);.*/\1/p') ||
            true
        if [[ -z $backup ]]; then
            ((was_running)) && systemctl start "$SERVICE"
            die "the backup before the upgrade failed; nothing was changed"
        fi
        ok "backup $backup"
        if [[ -n $pending ]]; then
            restore_db=1
            printf '    migrations: %s\n' "$pending"
            as_release "$new" doctor --migrate --config "$CONFIG" ||
                rollback "$old" "$new" "$backup" 1 "migrations failed"
        fi
    fi
    step "switch to release $new"
    switch_to "$new"
    install_unit
    if ((was_running || start)) && has_systemd; then
        step "start release $new and wait for /healthz"
        systemctl start "$SERVICE" || rollback "$old" "$new" "$backup" "$restore_db" "it did not start"
        as_release "$new" healthcheck --config "$CONFIG" --wait "$HEALTH_TIMEOUT" ||
            rollback "$old" "$new" "$backup" "$restore_db" "it did not turn healthy"
    else
        note "the service was not running; start it with: systemctl start cashloop"
    fi
    prune_releases
    printf '\nUpgraded: release %s -> %s (backup before it: %s).\n' "$old" "$new" "${backup:-none, no database yet}"
}

prune_releases() {
    step "old releases (keeping $KEEP_RELEASES)"
    local cur keep=() dir n used=() venv
    cur=$(current_release)
    mapfile -t keep < <(find "$RELEASES" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -printf '%f\n' |
        sort -n | tail -n "$KEEP_RELEASES")
    for dir in "$RELEASES"/*/; do
        n=$(basename "$dir")
        if [[ $n == "$cur" ]] || printf '%s\n' "${keep[@]}" | grep -qx "$n"; then
            used+=("$(basename "$(readlink "$dir/venv")")")
        else
            run rm -rf "$RELEASES/$n"
        fi
    done
    for dir in "$VENVS"/*/; do
        venv=$(basename "$dir")
        printf '%s\n' "${used[@]}" | grep -qx "$venv" || run rm -rf "$VENVS/$venv"
    done
    ok "releases: $(find "$RELEASES" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -printf '%f ' | xargs)"
}

# -- uninstall ------------------------------------------------------------------------------------

do_uninstall() {
    step "service"
    if has_systemd && [[ -f $UNIT_DST ]]; then
        if is_active; then
            run systemctl stop "$SERVICE"
        fi
        if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
            run systemctl disable "$SERVICE"
        fi
    fi
    local path removed=0
    for path in "$UNIT_DST" "$DROPIN_DIR" "$LINK" "$APP_DIR"; do
        if [[ -e $path || -L $path ]]; then
            run rm -rf "$path"
            removed=1
        fi
    done
    if ((removed)) && has_systemd; then
        run systemctl daemon-reload
    fi
    ((removed)) || ok "code and unit already removed"
    step "configuration and data"
    if ((purge)); then
        for path in "$CONF_DIR" "$STATE_DIR"; do
            if [[ -e $path ]]; then
                run rm -rf "$path"
            fi
        done
        if getent passwd "$SERVICE_USER" >/dev/null; then
            run userdel "$SERVICE_USER"
        fi
        if getent group "$SERVICE_USER" >/dev/null; then
            run groupdel "$SERVICE_USER"
        fi
        ok "purged"
    else
        printf '    kept: %s, %s (database and backups), user %s; --uninstall --purge removes them\n' \
            "$CONF_DIR" "$STATE_DIR" "$SERVICE_USER"
    fi
}

main() {
    parse_args "$@"
    check_host
    if ((dry_run)); then
        printf 'Dry run: nothing will be changed. Source: %s\n' "$SRC"
    fi
    case $mode in
    install) do_install ;;
    upgrade) do_upgrade ;;
    uninstall) do_uninstall ;;
    esac
}

main "$@"
