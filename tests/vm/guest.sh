#!/bin/sh
# Runs inside a `cargo xtask vm-test` VM (virtme-ng, the host's root file
# system shared read-only). Usage: guest.sh OUT
#
# OUT is a directory shared read-write with the host. The host writes:
#   OUT/env    shell assignments to source (PATH, HOME, CRASHTRACE_BIN, ...)
#   OUT/plan   one test per line: ID BINARY TEST (ID names its files)
#   OUT/exec   instead of a plan: one shell command to run
# and this script writes, as it goes:
#   OUT/started   the guest's uptime when the script began
#   OUT/uname     `uname -r`
#   OUT/facts     what the guest offers (BTF, mounts)
#   OUT/results   one line per test run: ID passed|failed MILLISECONDS
#   OUT/ID.log    the test binary's output
#   OUT/exec.log, OUT/exec.status   for a command
#   OUT/finished  the script's last act: its absence means the VM died
# The host reads only files; virtme-ng's exit status is not used.

out=$1
[ -d "$out" ] || { echo "guest.sh: no output directory '$out'" >&2; exit 2; }
cut -d' ' -f1 /proc/uptime > "$out/started"
uname -r > "$out/uname"
. "$out/env"

# What the tests need from the guest beyond virtme-ng's defaults: bpffs,
# debugfs and tracefs mounted (virtme-ng mounts the last two), cgroup2 with
# the memory controller (virtme-ng mounts it at /sys/fs/cgroup).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
{
    if [ -e /sys/kernel/btf/vmlinux ]; then echo "btf yes"; else echo "btf no"; fi
    echo "cgroup2-controllers $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
    grep -E ' (bpf|debugfs|tracefs|cgroup2) ' /proc/mounts | cut -d' ' -f2,3 | sed 's/^/mount /'
} > "$out/facts" 2>&1

now_ms() { echo $(($(date +%s%N) / 1000000)); }

if [ -f "$out/exec" ]; then
    sh -c "$(cat "$out/exec")" > "$out/exec.log" 2>&1
    echo $? > "$out/exec.status"
elif [ -f "$out/plan" ]; then
    cd "$CRASHTRACE_VM_TEST_CWD" || exit 2
    # The tests build and run their programs under target/tmp, shared by
    # 9p without a page cache: there every lookup of a path makes a new
    # inode, so a uprobe attached by path is not the inode the process
    # maps, and an executable's inode at exit is not the one crashtrace
    # opens later. A tmpfs copy (of what the host built there) behaves like
    # a disk.
    private=/run/crashtrace-target-tmp
    mkdir -p "$private" && cp -a "$CRASHTRACE_VM_TARGET_TMP/." "$private/" &&
        mount --bind "$private" "$CRASHTRACE_VM_TARGET_TMP" ||
        echo "guest.sh: cannot make a private copy of $CRASHTRACE_VM_TARGET_TMP" >&2
    while read -r id binary test; do
        start=$(now_ms)
        # libtest exits 0 when the filter matches nothing; the host checks
        # the log for "1 passed" too.
        timeout -k 10 "$CRASHTRACE_VM_TEST_TIMEOUT" "$binary" --exact "$test" \
            --test-threads=1 > "$out/$id.log" 2>&1
        rc=$?
        case $rc in
            0) status=passed ;;
            124 | 137) status=failed
                echo "vm-test: timed out after ${CRASHTRACE_VM_TEST_TIMEOUT}s" >> "$out/$id.log" ;;
            *) status=failed ;;
        esac
        echo "$id $status $(($(now_ms) - start))" >> "$out/results"
    done < "$out/plan"
fi
sync
now_ms > "$out/finished"
