#!/usr/bin/env bash
# The cross-node queue model (crates/queue/src/remote_model.rs) over many seeds:
# an owner and two workers over a lossy, duplicating, reordering network with
# partitions, stalls and restarts. CI runs 16 seeds; this runs 256 (or $SEEDS)
# of $STEPS steps each, in release mode.
#   scripts/queue-model.sh            # 256 seeds x 10,000 steps
#   SEEDS=1000 STEPS=20000 scripts/queue-model.sh
source "$(dirname "$0")/common.sh"
export MCPPLUS_MODEL_SEEDS="${SEEDS:-256}"
export MCPPLUS_MODEL_STEPS="${STEPS:-10000}"
export MCPPLUS_MODEL_FIRST_SEED="${FIRST_SEED:-1}"
log "queue model: $MCPPLUS_MODEL_SEEDS seeds x $MCPPLUS_MODEL_STEPS steps from seed $MCPPLUS_MODEL_FIRST_SEED"
cargo test --locked --release -p mcpplus-queue remote_model -- --nocapture
