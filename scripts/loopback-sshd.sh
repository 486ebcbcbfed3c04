#!/usr/bin/env bash
# Starts a private OpenSSH server on 127.0.0.1 that stands in for a remote board, and writes
# a devices file with a `loopback` device for it, so `harness run --device loopback` goes
# through the real SSH transport (host key check, key auth, SFTP, the on-device runner).
#
#   scripts/loopback-sshd.sh [--port 2222] [--dir .loopback] [--python PATH] [--log-level INFO] [--foreground]
#   .venv/bin/python -m harness run --devices-file .loopback/devices.yaml --device loopback --model unet-tiny
#   kill "$(cat .loopback/sshd.pid)"          # stop it
#
# Everything lives in DIR: host and client keys (generated once), sshd_config,
# authorized_keys, known_hosts (so the host key is verified, not trusted blindly),
# devices.yaml, the device's workdir and sshd.log. Your ~/.ssh is not touched.
# The tests start the server the same way (tests/sshd.py), with --foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
port=2222
dir=$repo/.loopback
python=$repo/.venv/bin/python  # the device's interpreter: this checkout's venv
# The host's interpreter that writes the device entry (the harness's peak detection): this
# checkout's venv, or HARNESS_HOST_PYTHON (harness devices emulate passes the one running it).
host_python=${HARNESS_HOST_PYTHON:-$repo/.venv/bin/python}
foreground=0
log_level=INFO  # DEBUG1 also logs each forwarding (direct-tcpip) request: a jump host's trace
while (( $# )); do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --log-level) log_level=$2; shift 2 ;;
        --foreground) foreground=1; shift ;;
        *) echo "usage: $0 [--port N] [--dir DIR] [--python PATH] [--log-level LEVEL] [--foreground]" >&2; exit 2 ;;
    esac
done
mkdir -p "$dir/work"
dir=$(cd "$dir" && pwd)
user=$(id -un)

[[ -f $dir/host_key ]] || ssh-keygen -q -t ed25519 -N '' -C loopback-host -f "$dir/host_key"
[[ -f $dir/client_key ]] || ssh-keygen -q -t ed25519 -N '' -C loopback-client -f "$dir/client_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys"

cat > "$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowUsers $user
# The keys live outside a home directory; StrictModes would insist on its ownership rules.
StrictModes no
Subsystem sftp internal-sftp
LogLevel $log_level
EOF

# OpenSSH's known_hosts form for a non-default port: [host]:port keytype key
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" > "$dir/known_hosts"

# The device entry: this machine's cores and peaks, as detected for the local device.
"$host_python" - "$dir" "$port" "$user" "$python" > "$dir/devices.yaml" <<'PY'
import json, sys
from harness.devices.peaks import detect_host
d, port, user, python = sys.argv[1:]
h = detect_host()
entry = {"description": "this machine through a private sshd on 127.0.0.1 (scripts/loopback-sshd.sh)",
         "transport": "ssh", "host": "127.0.0.1", "port": int(port), "user": user,
         "key": f"{d}/client_key", "known_hosts": f"{d}/known_hosts", "python": python,
         "workdir": f"{d}/work", "arch": h.arch, "cpu_model": h.cpu_model, "cores": h.cores,
         "freq_ghz": h.freq_ghz or 1.0, "isa": list(h.isa),
         "flops_per_cycle": {"fp32": h.flops_per_cycle[0], "fp16": h.flops_per_cycle[1]},
         "target": "host", "connect_timeout_s": 10, "command_timeout_s": 1800}
# JSON is YAML; one line per field keeps it readable.
print("default: loopback\ndevices:\n  loopback:")
for k, v in entry.items():
    print(f"    {k}: {json.dumps(v)}")
PY

# sshd refuses to start without its privilege-separation directory.
if [[ ! -d /run/sshd ]]; then
    if (( EUID == 0 )); then mkdir -p /run/sshd; else sudo mkdir -p /run/sshd; fi
fi

if (( foreground )); then
    exec /usr/sbin/sshd -D -e -f "$dir/sshd_config"
fi
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -s $dir/sshd.pid ]] && break; sleep 0.2; done
echo "loopback sshd listening on 127.0.0.1:$port (pid $(cat "$dir/sshd.pid" 2>/dev/null || echo '?'))"
echo "run:  .venv/bin/python -m harness run --devices-file $dir/devices.yaml --device loopback --model unet-tiny"
echo "stop: kill \$(cat $dir/sshd.pid)"
