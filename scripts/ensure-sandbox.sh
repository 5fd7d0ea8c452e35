#!/bin/sh
# Make sure bubblewrap (`bwrap`), which bench/sandbox.py uses to run generated code, is installed
# and can create namespaces here. Idempotent; installs with apt-get only when we are root.
# Prints one line saying what it did; exits non-zero when the sandbox cannot work.
set -eu

smoke_test() {
    # The namespaces the sandbox needs; fails where user namespaces or mounts are forbidden.
    bwrap --unshare-pid --unshare-net --die-with-parent --ro-bind / / true 2>&1
}

if command -v bwrap >/dev/null 2>&1; then
    did="bubblewrap already installed ($(command -v bwrap))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # Quiet on success (apt-get chatters on stderr too); the whole log when it fails.
    if ! log=$(apt-get update -qq 2>&1 && apt-get install -y -qq --no-install-recommends bubblewrap 2>&1); then
        echo "$log" >&2
        echo "ensure-sandbox: installing bubblewrap with apt-get failed" >&2
        exit 1
    fi
    did="installed bubblewrap with apt-get ($(command -v bwrap))"
else
    echo "ensure-sandbox: bubblewrap (bwrap) is missing and cannot be installed automatically" \
        "(needs root and apt-get); install it, e.g. 'sudo apt-get install bubblewrap'." \
        "Code tasks refuse to run without it." >&2
    exit 1
fi

if ! err=$(smoke_test); then
    echo "ensure-sandbox: $did, but it cannot create a sandbox here: $err" \
        "(user namespaces disabled? see kernel.unprivileged_userns_clone," \
        "kernel.apparmor_restrict_unprivileged_userns or the container's seccomp profile)" >&2
    exit 1
fi
echo "ensure-sandbox: $did; sandbox works"
