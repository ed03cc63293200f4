#!/usr/bin/env bash
# After run_all.sh: the balancer's second seed, then every study's tables rebuilt.
cd /work/ablations
for study in balancer discriminator quantizer; do
  /work/main/.venv/bin/bench ablate $study --data manifest:/work/training_corpus/MANIFEST.jsonl \
      --out /work/ablations/$study --workers 2 > /work/ablations/$study.more.log 2>&1
  echo "$study (more) rc=$? $(date)" >> /work/ablations/status.log
done
