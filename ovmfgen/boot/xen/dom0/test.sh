# dom0's test (ovmfgen/boot/xen/dom0/test.sh, shipped with ovmfgen): for each guest in turn, `xl create` it,
# wait for what it should show (or its end), report. boot/xen/guests.py's dom0_test_script puts the
# OV_* parameters in front of this file (the lines classify_xen_run reads, dom0's deadlines in dom0
# seconds, the host-speed calibration) and the run_guest calls after it.
#
# Prints ${OV_EVENT}/${OV_RESULT} lines, and each run's part of the log between ${OV_GUEST_START} LABEL
# and ${OV_GUEST_STOP} LABEL, so that classify_xen_run reads it as if the guest had had the run to itself.
# The unit tests point these at fakes; in dom0 they are the real places.
UPTIME=${OVMFGEN_UPTIME:-/proc/uptime}
CONSOLE=${OVMFGEN_CONSOLE_DIR:-/var/log/xen/console}
TMP=${TMPDIR:-/tmp}
CFG_DIR=${OVMFGEN_CFG_DIR:-/ovmfgen}
SYS_BLOCK=${OVMFGEN_SYS_BLOCK:-/sys/block}
BLOCK_ERROR=${OVMFGEN_BLOCK_ERROR:-$OV_BLOCK_ERROR}
# The loop below runs every dom0 second while a guest boots, on the same (emulated) CPUs as the guest:
# what it spawns is time the guest does not get. dom0's clock is therefore read with the shell's own
# `read` (no process), and a guest's console is searched once a second for all it can show, then for
# which one only when something showed.
ev() { read -r up _ < "$UPTIME"; echo "${OV_EVENT} $1 $up${2:+ $2}"; }
now() { read -r up _ < "$UPTIME"; t=${up%.*}; }
# Host speed: a fixed loop; SCALE = how many times slower than the reference it ran (1..OV_MAX_SCALE).
read -r t0 _ < "$UPTIME"
i=0
while [ $i -lt "$OV_CALIBRATION_LOOPS" ]; do i=$((i + 1)); done
read -r t1 _ < "$UPTIME"
SCALE=$(awk -v a="$t0" -v b="$t1" -v ref="$OV_CALIBRATION_REFERENCE_S" -v max="$OV_MAX_SCALE" \
    'BEGIN { s = (b - a) / ref; n = int(s); if (n < s) n++; if (n < 1) n = 1; if (n > max) n = max; print n }')
IDLE=$(( OV_IDLE_S * SCALE ))
CAP=$(( OV_CAP_S * SCALE ))
echo "${OV_EVENT} calibrated $t1 loop=$t0..$t1 scale=$SCALE idle=$IDLE cap=$CAP"
# The block device whose serial is $1 (each guest's disk is a virtio-blk drive of the outer QEMU); none: ''.
find_disk() {
    for f in "$SYS_BLOCK"/*/serial; do
        [ -r "$f" ] && [ "$(cat "$f" 2>/dev/null)" = "$1" ] && { echo "/dev/$(basename "$(dirname "$f")")"; return; }
    done
}
# dom0's block devices and their serials, for a report: "vda=d0-pvh-os vdb=d1-hvm-os" (or "none").
list_disks() {
    out=""
    for d in "$SYS_BLOCK"/*; do
        [ -e "$d" ] || continue
        case "${d##*/}" in loop*|ram*) continue ;; esac
        out="$out ${d##*/}=$(cat "$d/serial" 2>/dev/null || echo '?')"
    done
    echo "${out# }" | sed 's/^$/none/'
}
# The run cannot start for a reason of dom0's: say why (one line the classifier reads), end the run.
dom0_failed() {
    echo "${OV_DOM0_FAILURE} $1"
    echo "${OV_RESULT} dom0-failed"
    echo "${OV_GUEST_STOP} $LABEL"
}
run_guest() {
NAME=$1
LABEL=$2
WANT=$3
EVENT=$4
SERIAL=${5:-}
LOG="$CONSOLE/guest-$NAME.log"
CFG=$CFG_DIR/$NAME.cfg
rm -f "$LOG" "$BLOCK_ERROR"
echo "${OV_GUEST_START} $LABEL"
if [ -n "$SERIAL" ]; then
    dev=$(find_disk "$SERIAL")
    if [ -z "$dev" ]; then
        dom0_failed "no block device with serial $SERIAL for the guest's disk (dom0's disks: $(list_disks))"
        return
    fi
    echo "${OV_XL_PREFIX}disk: $dev (serial $SERIAL, $(cat "$SYS_BLOCK/${dev##*/}/size" 2>/dev/null) sectors)"
    if ! sed "s|${OV_DISK_PLACEHOLDER}|$dev|" "$CFG" > "$TMP/$NAME.cfg" 2> "$TMP/sed.err"; then
        dom0_failed "cannot write $TMP/$NAME.cfg: $(head -n 1 "$TMP/sed.err")"
        return
    fi
    CFG=$TMP/$NAME.cfg
fi
ev create
if ! xl create "$CFG" > $TMP/xl-create.log 2>&1; then
    sed "s/^/${OV_XL_PREFIX}/" $TMP/xl-create.log
    if [ -s "$BLOCK_ERROR" ]; then
        # dom0's hotplug script could not attach the guest's disk: dom0's failure, not the firmware's.
        dom0_failed "cannot attach the guest's disk: $(head -n 1 "$BLOCK_ERROR")"
        return
    fi
    tail -n 20 /var/log/xen/qemu-dm-$NAME.log 2>/dev/null | sed "s/^/${OV_XL_PREFIX}qemu-dm: /"
    echo "${OV_RESULT} create-failed"
    echo "${OV_GUEST_STOP} $LABEL"
    return
fi
sed "s/^/${OV_XL_PREFIX}/" $TMP/xl-create.log
ev created
result=timeout
now
created=$t
last=$created
tick=$(( created + OV_TICK_S ))
seen=""
pressed=""
polls=0
# Anything the loop acts on in the guest's console (one grep a second; which one, only once it shows).
ANY="$WANT|$OV_SB_REFUSED|Shell>"
while :; do
    now
    polls=$((polls + 1))
    if [ -z "$pressed" ] && grep -q "$OV_SHELL_COUNTDOWN" "$LOG" 2>/dev/null; then
        # The Shell's startup countdown (5 steps) waits by gBS->Stall, a busy loop: under icount each
        # step costs as much emulation as a second of boot. Like a user at the console, press a key
        # (not ESC: startup.nsh still runs) on the guest's console: the countdown ends after its step.
        pressed=1
        tty=$(xenstore-read "/local/domain/$(xl domid "$NAME" 2>/dev/null)/console/tty" 2>/dev/null)
        if [ -n "$tty" ] && printf ' ' > "$tty" 2>/dev/null; then ev key; fi
    fi
    if grep -Eq "$ANY" "$LOG" 2>/dev/null; then
        if grep -Eq "$WANT" "$LOG" 2>/dev/null; then
            ev "$EVENT"
            result=$EVENT
            # A guest's script may still be writing to its disk when its marker shows: give it a moment.
            [ "$EVENT" = persist ] && sleep 2
            # Freeze the guest at once: nothing it does after this counts, and a guest that keeps
            # taking interrupts can still trip QEMU's TCG bug before dom0 has reported.
            xl pause "$NAME"
            break
        fi
        if [ "$EVENT" != refused ] && grep -Eq "$OV_SB_REFUSED" "$LOG" 2>/dev/null; then
            # Secure Boot refused an image: the firmware falls through to its boot manager (a Secure Boot
            # build has no Shell) and waits for a key there. That is the guest's answer: stop now.
            ev refused
            result=refused
            xl pause "$NAME"
            break
        fi
        if [ "$EVENT" != shell ] && grep -q 'Shell>' "$LOG" 2>/dev/null; then
            # Not what it should have shown: the firmware fell through to the Shell.
            ev shell
            result=shell
            xl pause "$NAME"
            break
        fi
    fi
    # Xen's ring, read once: a guest's ASSERT in it, else its last (dN) line (the progress below).
    # A DEBUG firmware that writes to the hypervisor console shows its ASSERT in Xen's ring, then
    # dead-loops: stop waiting at once (xl dmesg -c: the next guest starts from a clean ring).
    ring=$(xl dmesg 2>/dev/null | awk '/\(d[1-9][0-9]*\) ASSERT/ { a = 1 } /\(d[1-9][0-9]*\)/ { l = $0 }
        END { print (a ? "ASSERT" : l) }')
    if [ "$ring" = ASSERT ]; then
        ev assert
        result=assert
        break
    fi
    state=$(xl list 2>/dev/null | awk -v n="$NAME" '$1 == n { print $5 }')
    if [ -z "$state" ]; then
        # An OS that powers off right after its marker: the log is still there.
        if grep -Eq "$WANT" "$LOG" 2>/dev/null; then ev "$EVENT"; result=$EVENT; else result=gone; fi
        break
    fi
    case "$state" in *c*) result=crashed; break ;; esac
    # Progress: the guest's console grew, or it printed a new (dN) line to Xen's ring.
    fp="$(stat -c %s "$LOG" 2>/dev/null) $ring"
    if [ "$fp" != "$seen" ]; then
        seen=$fp
        last=$t
    fi
    if [ $(( t - last )) -ge "$IDLE" ]; then
        echo "${OV_DEADLINE} no new guest output for $IDLE s (dom0 clock; idle limit, host scale $SCALE)"
        break
    fi
    if [ $(( t - created )) -ge "$CAP" ]; then
        echo "${OV_DEADLINE} no shell after $CAP s (dom0 clock; cap, host scale $SCALE)"
        break
    fi
    if [ "$t" -ge "$tick" ]; then
        ev tick "polls=$polls"
        tick=$(( t + OV_TICK_S ))
    fi
    sleep 1
done
xl list 2>&1 | sed "s/^/${OV_XL_PREFIX}/"
[ "$result" = "$EVENT" ] || tail -n 20 /var/log/xen/qemu-dm-$NAME.log 2>/dev/null | sed "s/^/${OV_XL_PREFIX}qemu-dm: /"
echo "${OV_GUEST_BEGIN}"
tail -c 131072 "$LOG" 2>/dev/null | sed "s/^/${OV_GUEST_PREFIX}/"
echo
echo "${OV_GUEST_END}"
echo "${OV_RESULT} $result"
ev destroy
xl destroy "$NAME" > /dev/null 2>&1
xl dmesg -c > /dev/null 2>&1
ev stopped
echo "${OV_GUEST_STOP} $LABEL"
}
