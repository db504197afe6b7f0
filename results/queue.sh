#!/bin/sh
# The background training runs of results/README.md, as two queues ("slots")
# that share the machine's two cores, one thread each:
#
#   sh results/queue.sh A &      # resnet20-fp, resnet20-tex2, resnet{32,44,56}-fp
#   sh results/queue.sh B &      # resnet20-ternary, resnet20-ternary-ft, resnet{32,44,56}-ternary
#
# Each run starts if it has no folder yet, resumes (--resume) once its folder
# holds a config.json (with a last.npz, or without one when it stopped in its
# first epoch: then --resume starts it again from that config), and is skipped
# once it has finished (result.json).  A finished ternary
# run is also exported as final.packed.npz (python -m tqref export --format packed).  A session that ends
# mid-epoch loses only that epoch: start the same two queues in the next one.
# A finished run's last.npz and best.npz are then published weights only
# (export --format weights, in place): their momentum buffers serve --resume
# alone and double the file, and with them a ResNet-44's last.npz (5.4 MB)
# no longer fits the repository's 5 MB limit for a file.
# A run fine-tuned from another slot's run waits until that run has finished.
#
#   sh results/queue.sh split    # at the end of a session, once both queues are stopped
#
# makes every run still training fit the 5 MB limit for committing: its
# last.npz split in two (export --format split: last.npz weights only and
# last.momentum.npz, which --resume reads as one) and its best.npz weights only.
#
# Python runs the tqref next to this script (so a queue can run from a git
# worktree of a fixed commit while the repository is being edited); the run
# folders go to $RESULTS (default: this script's folder).  Data: $TQREF_DATA
# (default ../shared/data/cifar10 beside the repository).
set -e
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-$(pwd)/results}
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export TQREF_DATA=${TQREF_DATA:-$(cd .. && pwd)/shared/data/cifar10}

# The paper's recipe compressed from 200 to 30 epochs (milestones at 0.4, 0.6
# and 0.8 of training), shared by the full-precision and ternary ResNet-32/44/56,
# with a first epoch at lr 0.01 (x10 at epoch 1): at lr 0.1 from the first step
# the deeper nets are thrown to chance for hundreds of steps (results/first_steps.py).
SHORT="--lr 0.01 --epochs 30 --milestones 1 12 18 24 --gammas 10 0.1 0.1 0.5"
# Fine-tuning from the final full-precision ResNet-20 (--init-from), the same
# for t_ex = 1 and 2.
FINETUNE="--lr 0.01 --epochs 40 --milestones 20 30 --gammas 0.1 0.1"

wait_for() {
    [ -f "$RESULTS/$1/result.json" ] || echo "waiting for $1 to finish"
    until [ -f "$RESULTS/$1/result.json" ]; do sleep "${QUEUE_POLL_SECONDS:-120}"; done
}

run() {
    name=$1; shift
    if [ -f "$RESULTS/$name/result.json" ]; then
        echo "$name: finished"
    else
        resume=""
        [ -f "$RESULTS/$name/config.json" ] && resume="--resume"
        echo "$name: $(date -u +%FT%TZ) python -m tqref train $* --seed 0 --no-progress --out $RESULTS/$name $resume"
        python -m tqref train "$@" --seed 0 --no-progress --out "$RESULTS/$name" $resume
    fi
    case " $* " in
        *" --ternary "*)  # the deployable file: 2-bit codes, α, folded BN
            [ -f "$RESULTS/$name/final.packed.npz" ] ||
                python -m tqref export "$RESULTS/$name/last.npz" "$RESULTS/$name/final.packed.npz" --format packed ;;
    esac
    for checkpoint in last best; do  # left as it is once weights only
        python -m tqref export "$RESULTS/$name/$checkpoint.npz" "$RESULTS/$name/$checkpoint.npz" --format weights
    done
}

case "$1" in
    A)
        run resnet20-fp --model resnet20 --epochs 200
        run resnet20-tex2 --model resnet20 --ternary --t-ex 2 --init-from "$RESULTS/resnet20-fp/last.npz" $FINETUNE
        for depth in 32 44 56; do run resnet$depth-fp --model resnet$depth $SHORT; done
        ;;
    B)
        run resnet20-ternary --model resnet20 --ternary --epochs 200
        wait_for resnet20-fp    # slot A's; finishes about when resnet20-ternary does
        run resnet20-ternary-ft --model resnet20 --ternary --init-from "$RESULTS/resnet20-fp/last.npz" $FINETUNE
        for depth in 32 44 56; do run resnet$depth-ternary --model resnet$depth --ternary $SHORT; done
        ;;
    split)
        for dir in "$RESULTS"/*/; do
            if [ -f "$dir/last.npz" ] && [ ! -f "$dir/result.json" ]; then
                python -m tqref export "${dir}last.npz" "${dir}last.npz" --format split
                if [ -f "$dir/best.npz" ]; then
                    python -m tqref export "${dir}best.npz" "${dir}best.npz" --format weights
                fi
            fi
        done
        ;;
    *)
        echo "usage: sh results/queue.sh A|B|split" >&2
        exit 2
        ;;
esac
