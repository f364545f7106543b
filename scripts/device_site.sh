# Sourced by the scripts that run on the GPU machine (gpu_sweep.sh, ablations/x2_round*.sh).
# install_site [WHEEL_DIR]: the wheels of WHEEL_DIR (default .whl: Hydra, OmegaConf, antlr4, the joblib launcher,
# from scripts/gpu_wheels.sh) installed into /tmp/site once per machine; nothing when there are none.
install_site() {
  local wheels=${1:-.whl}
  if [ ! -f /tmp/site/.done ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$wheels"/*.whl && touch /tmp/site/.done
  fi
}
