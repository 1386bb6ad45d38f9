#!/usr/bin/env bash
# Runs the MONAI Model Zoo's own checks on this repository's bundles, offline (docs/bundles.md, Model Zoo checks).
#
#   scripts/zoo_checks/run_zoo_checks.sh MODEL_ZOO_DIR [WORK_DIR]
#
# MODEL_ZOO_DIR: a checkout of github.com/Project-MONAI/model-zoo (its ci/ folder and models/model_info.json are
# read; nothing is fetched). WORK_DIR (default: a new temporary folder) gets a zoo-like tree: ci/ copied from the
# checkout, ci/unit_tests/ plus this folder's unit tests, models/ with copies of bundles/brats_cggm and
# bundles/multimodal_cggm. Nothing in the repository is written. Run it in the environment the bundles run in
# (python with brats-cggm, monai, pytorch-ignite, nibabel, tensorboard, jsonschema); the pre-commit hooks run
# from HOOKS_VENV (default /tmp/zoo-hooks-venv: a venv with `pip install pre-commit pre-commit-hooks==4.6.0`).
# ZOO_TRAIN_EPOCHS (default 2): epochs of the training run whose models/model.pt the checks read.
# In the copy only, ci/bundle_custom_data.py gets multimodal_cggm in exclude_verify_shape_list and
# exclude_verify_torchscript_list (the change a zoo submission would carry; docs/bundles.md says why), and the
# multimodal unit tests read the task overlays from BRATS_CGGM_TASKS_DIR (this repository's configs/tasks).
# Each check's exit status is printed; the script exits non-zero if a check that applies failed.
set -u -o pipefail

ZOO=$(cd "${1:?usage: run_zoo_checks.sh MODEL_ZOO_DIR [WORK_DIR]}" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${2:-$(mktemp -d /tmp/zoo-checks.XXXXXX)}
HOOKS_VENV=${HOOKS_VENV:-/tmp/zoo-hooks-venv}
EPOCHS=${ZOO_TRAIN_EPOCHS:-2}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
failed=()
check() {  # check NAME COMMAND...: run it in WORK/zoo, log to WORK/NAME.log, record the outcome
    local name=$1; shift
    (cd "$WORK/zoo" && "$@") >"$WORK/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc (log: $WORK/$name.log)"
    [ $rc -eq 0 ] || failed+=("$name")
}

echo "work folder: $WORK"
rm -rf "$WORK/zoo" && mkdir -p "$WORK/zoo/models"
cp -r "$ZOO/ci" "$WORK/zoo/ci"
cp "$REPO"/scripts/zoo_checks/unit_tests/test_*.py "$WORK/zoo/ci/unit_tests/"
cp "$ZOO/models/model_info.json" "$WORK/zoo/models/"
# the change a zoo submission of multimodal_cggm would carry in ci/bundle_custom_data.py (docs/bundles.md): its
# network takes a dictionary of text/audio/vision sequences, not one `image` tensor (verify_net_in_out), and is
# not TorchScript-scriptable (ckpt_export); made in the copy only
cat >>"$WORK/zoo/ci/bundle_custom_data.py" <<'EOF_LISTS'

# brats-cggm's scripts/zoo_checks/run_zoo_checks.sh: multimodal_cggm
exclude_verify_shape_list.append("multimodal_cggm")
exclude_verify_torchscript_list.append("multimodal_cggm")
EOF_LISTS
for bundle in brats_cggm multimodal_cggm; do
    cp -r "$REPO/bundles/$bundle" "$WORK/zoo/models/$bundle"
    # what ci/prepare_schema.py does after downloading metadata.json's schema URL: the stored schema instead
    mkdir -p "$WORK/zoo/models/$bundle/eval"
    cp "$REPO/bundles/$bundle/configs/schema/metadata_schema.json" "$WORK/zoo/models/$bundle/eval/schema.json"
    # the zoo's harness puts bundle_root alone on a child's PYTHONPATH: the package under test is linked
    # there, so a child process imports this checkout's brats_cggm whatever is installed
    ln -s "$REPO/brats_cggm" "$WORK/zoo/models/$bundle/brats_cggm"
done
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# multimodal_cggm's task overlays are the repository's, not the bundle's (its unit tests read this)
export BRATS_CGGM_TASKS_DIR="$REPO/configs/tasks"

# models/model.pt of brats_cggm by the bundle README's training command, in the copy
(cd "$WORK/zoo/models/brats_cggm" \
    && python -m monai.bundle run --config_file configs/train.yaml --max_epochs "$EPOCHS" --device cpu \
        >"$WORK/train.log" 2>&1 \
    && mkdir -p models && cp runs/brats_cggm/models/model.pt models/model.pt \
    && rm -rf runs data) || { echo "training for models/model.pt failed (log: $WORK/train.log)"; exit 1; }
echo "brats_cggm models/model.pt: trained ($EPOCHS epochs, log: $WORK/train.log)"
# models/model.pt of multimodal_cggm by its README's training command with the repository's MOSI overlay, on a
# tiny synthetic MOSI pickle (brats_cggm.adapters.synthetic; the real data sets are not public downloads)
(python -c "from brats_cggm.adapters import synthetic; synthetic.write_mosi_pickle('$WORK/mosi_data.pkl', \
        sizes={'train': 16, 'valid': 8, 'test': 8})" \
    && cd "$WORK/zoo/models/multimodal_cggm" \
    && python -m monai.bundle run --config_file "['configs/train.yaml','$REPO/configs/tasks/mosi.yaml']" \
        --dataset_dir "$WORK/mosi_data.pkl" --output_dir runs/mosi --max_epochs 1 --device cpu \
        >"$WORK/train_multimodal.log" 2>&1 \
    && mkdir -p models && cp runs/mosi/models/model.pt models/model.pt && rm -rf runs) \
    || { echo "training for models/model.pt failed (log: $WORK/train_multimodal.log)"; exit 1; }
echo "multimodal_cggm models/model.pt: trained (1 epoch on synthetic MOSI, log: $WORK/train_multimodal.log)"

for bundle in brats_cggm multimodal_cggm; do
    check "verify_min_$bundle" python ci/verify_bundle.py -b "$bundle" -p models -m min
    check "verify_full_$bundle" python ci/verify_bundle.py -b "$bundle" -p models -m full
done
for bundle in brats_cggm multimodal_cggm; do
    check "unit_$bundle" python ci/unit_tests/runner.py --b "$bundle"
    check "unit_dist_$bundle" torchrun --nproc_per_node=1 ci/unit_tests/runner.py --b "$bundle" --dist True
done

# the zoo's pre-commit hooks (scripts/zoo_checks/pre-commit-config.yaml) on the bundles' files as git tracks them,
# in a git repository of the copies (the hooks' autofixes land there); modes as in this repository's index
# (every bundle file is 100644: a checkout's umask may mark them executable on disk)
for bundle in brats_cggm multimodal_cggm; do
    (cd "$REPO" && git ls-files "bundles/$bundle" | sed 's|^bundles/||') >"$WORK/files_$bundle.txt"
done
(cd "$WORK/zoo/models" && git init -q . && xargs git add -f --chmod=-x <"$WORK/files_brats_cggm.txt" \
    && xargs git add -f --chmod=-x <"$WORK/files_multimodal_cggm.txt") || exit 1
for bundle in brats_cggm multimodal_cggm; do
    check "pre_commit_$bundle" bash -c "cd '$WORK/zoo/models' && PATH='$HOOKS_VENV/bin':\$PATH \
        xargs pre-commit run --config '$REPO/scripts/zoo_checks/pre-commit-config.yaml' --files <'$WORK/files_$bundle.txt'"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all checks passed"
