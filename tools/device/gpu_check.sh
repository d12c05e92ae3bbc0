set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NEURODECODE_DATA=/tmp/nddata
python3 -c "import torch, accelerate, transformers, diffusers; print(torch.__version__, torch.cuda.get_device_name(), accelerate.__version__, transformers.__version__, diffusers.__version__)"
echo "== 1. GPU-marked tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/unit/tasks/test_reconstruction.py tests/unit/utils/test_utils.py 2>&1 | tail -6
echo "== 2. fit demo on cuda, bf16, tensorboard tracking"
S="--set models.mlp.max_epochs=50"
/usr/bin/time -f "wall %e s, maxrss %M kB" timeout 200 python3 -m neurodecode.cli fit demo -q --set device=cuda --set models.mlp.mixed_precision=bf16 --set "tracking=[tensorboard]" --set output_dir=/tmp/runs_gpu $S 2>&1 | tail -4
python3 - <<'PY'
import json, glob
m = json.load(open("/tmp/runs_gpu/demo/metrics.json"))
for model in ("ridge", "mlp"):
    print(model, {s: round(m["models"][model][s]["metrics"]["nway_top1_forward"]["value"], 3) for s in m["models"][model] if s.startswith("subj")})
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator("/tmp/runs_gpu/demo/tracking/mlp"); ea.Reload()
tags = ea.Tags()["scalars"]; print("tb tags", len(tags), sorted(tags)[:6]); print("val/top1 steps", len(ea.Scalars("val/top1")))
PY
echo "== 3. accelerate launch, shipped config, 1 GPU process"
/usr/bin/time -f "wall %e s, maxrss %M kB" timeout 200 python3 -m accelerate.commands.launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 1 -m neurodecode.cli fit demo -q --set device=auto --set output_dir=/tmp/runs_acc $S 2>&1 | tail -4
ls /tmp/runs_acc; python3 -c "
import json; m=json.load(open('/tmp/runs_acc/demo/metrics.json')); print('acc mlp', {s: round(v['metrics']['nway_top1_forward']['value'],3) for s,v in m['models']['mlp'].items() if s.startswith('subj')}, m.get('timings_s'))"
echo "== 4. same demo on CPU here (16 cores), for the timing"
/usr/bin/time -f "wall %e s, maxrss %M kB" timeout 120 python3 -m neurodecode.cli fit demo -q --set device=cpu --set output_dir=/tmp/runs_cpu $S 2>&1 | tail -2
python3 -c "
import json
for d in ('gpu','cpu'):
    m=json.load(open(f'/tmp/runs_{d}/demo/metrics.json')); print(d, m['timings_s'])"
