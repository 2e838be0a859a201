# Sourced by the packaging scripts: how podman runs on these machines, the project's version.
#
# Debian's podman works here only with runc (crun refuses the kernel's hybrid cgroup layout)
# and with explicit ulimits below the host's hard limits (the defaults exceed them).

_hard_limit() {
    local value
    value=$(ulimit "$1")
    if [ "$value" = "unlimited" ] || [ "$value" -gt "$2" ]; then
        value=$2
    fi
    echo $((value / 2))
}

PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit "nofile=$(_hard_limit -Hn 131072):$(_hard_limit -Hn 131072)"
    --ulimit "nproc=$(_hard_limit -Hu 65536):$(_hard_limit -Hu 65536)")

# The one version number (pyproject.toml) for the image label and the package.
project_version() {
    python3 - "$1/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
PY
}
