#!/usr/bin/env bash
# The committed CPU-scale result of issue 19: the three shipped studies, one after another.
cd /work/ablations
for study in discriminator balancer quantizer; do
  /work/main/.venv/bin/bench ablate $study --data manifest:/work/training_corpus/MANIFEST.jsonl \
      --out /work/ablations/$study --workers 2 > /work/ablations/$study.log 2>&1
  echo "$study rc=$? $(date)" >> /work/ablations/status.log
done
