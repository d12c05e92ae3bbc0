"""Benchmark: memory and time of ``from_published("mindeye2", final_subj01-sized file)``.

Writes a checkpoint with exactly the keys and shapes of MindEye2's ``final_subj01_pretrained_40sess_24bs``
(249 keys, 2,227,296,224 float32 elements, 8.9 GB; zeros, with a valid noise schedule and one rotary table,
so every check passes), then reads it in a fresh subprocess per reader while a thread samples the process's
anonymous and file-backed resident memory (``/proc/self/status``: ``RssAnon``, ``RssFile``) every 20 ms:

(a) ``nd.models.from_published("mindeye2", path)``: the file memory-mapped (``torch.load(mmap=True)``), each
    tensor placed without a copy, the model built once and filled in place by ``load_state_dict``;
(b) baseline — what the original's inference notebook does (``src/recon_inference.ipynb``): the file read
    whole (``torch.load(map_location="cpu")``), then ``load_state_dict`` into a model of the same size
    (here the same BrainDecoder, so the model's own cost is identical and only the reading differs).

Anonymous memory is what the process holds; file-backed pages of a memory-mapped file are the page cache,
which the kernel drops under pressure. Usage::

    python benchmarks/bench_published_load.py --out /tmp/nd_bench_published [--scale 0.25]

``--scale`` shrinks the hidden and token widths for a quick run (1.0: the published size, ~9 GB on disk and
up to ~18 GB of memory for the baseline). Results: ``benchmarks/results/published_load.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MEASURE = r'''
import json, sys, threading, time
import torch

peak = {"anon": 0, "file": 0, "total": 0}
stop = False


def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out["RssAnon"], out["RssFile"]


def sample():
    while not stop:
        a, f = status()
        peak["anon"], peak["file"] = max(peak["anon"], a), max(peak["file"], f)
        peak["total"] = max(peak["total"], a + f)
        time.sleep(0.02)


import neurodecode.models as ndm  # imports before the baseline sample
from neurodecode.models.published.mindeye2 import build_mindeye2, convert_mindeye2

base_anon, base_file = status()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
mode, path = sys.argv[1], sys.argv[2]
if mode == "ours":
    model = ndm.from_published("mindeye2", path, subjects=[1])
else:  # the original's way: the whole file in memory, then load_state_dict into the built model
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]
    model = convert_mindeye2(state, subjects=[1])
    del state
took = time.perf_counter() - t0
stop = True
thread.join()
n = sum(p.numel() for p in model.parameters())
print(json.dumps({"mode": mode, "seconds": took, "params": n, "peak_anon": peak["anon"] - base_anon,
                  "peak_file": peak["file"], "peak_total": peak["total"] - base_anon - base_file}))
'''


def write_checkpoint(path: Path, scale: float) -> dict:
    """The final_subj01 key list (scaled widths) with zeros, a valid schedule and one rotary table."""
    import torch

    from neurodecode.models.priors import noise_schedule
    from neurodecode.models.published.mindeye2 import original_mindeye2_keys

    config = {}
    if scale != 1.0:
        config = dict(hidden_dim=max(32, int(4096 * scale)), clip_dim=max(32, int(1664 * scale) // 52 * 52),
                      n_tokens=max(4, int(256 * scale)), prior_tokens=max(4, int(256 * scale)))
    marker = path.with_suffix(".json")
    if path.is_file() and marker.is_file() and json.loads(marker.read_text()).get("config") == config:
        return json.loads(marker.read_text())
    keys = original_mindeye2_keys(**config)
    state = {k: torch.zeros(s) for k, s in keys.items()}
    schedule = noise_schedule("cosine", 100)
    state.update({f"diffusion_prior.noise_scheduler.{k}": v for k, v in schedule.items()})
    rot = next(s for k, s in keys.items() if k.endswith("rotary_emb.freqs"))[0]
    freqs = 1.0 / 10000 ** (torch.arange(0, 2 * rot, 2).float() / (2 * rot))
    state.update({k: freqs for k in keys if k.endswith("rotary_emb.freqs")})
    n = sum(t.numel() for t in state.values())
    torch.save({"model_state_dict": state, "epoch": 0}, path)
    info = {"config": config, "keys": len(keys), "elements": n, "bytes": path.stat().st_size}
    marker.write_text(json.dumps(info))
    return info


def measure(mode: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, mode, str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/nd_bench_published"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).parent / "results" / "published_load.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"final_subj01_scale{args.scale:g}.pth"
    t0 = time.perf_counter()
    info = write_checkpoint(path, args.scale)
    print(f"checkpoint: {info['keys']} keys, {info['elements']:,} elements, {info['bytes'] / 1e9:.2f} GB "
          f"({time.perf_counter() - t0:.0f} s)")
    rows = []
    for mode in ("ours", "baseline"):
        r = measure(mode, path)
        rows.append(r)
        print(f"{mode:8s} {r['seconds']:6.1f} s  peak anonymous {r['peak_anon'] / 1e9:5.2f} GB  "
              f"peak resident (anon + file) {r['peak_total'] / 1e9:5.2f} GB")
    gb = info["bytes"] / 1e9
    lines = [f"# `from_published(\"mindeye2\", …)` on a {gb:.1f} GB `final_subj01`-shaped file "
             f"(scale {args.scale:g})",
             "", f"{info['keys']} keys, {info['elements']:,} float32 elements. "
             "Command: `python benchmarks/bench_published_load.py"
             + (f" --scale {args.scale:g}" if args.scale != 1.0 else "") + "` (2 CPU cores, no GPU).", "",
             "| reader | time (s) | peak anonymous memory (GB) | peak resident incl. page cache (GB) |",
             "| --- | --- | --- | --- |"]
    names = {"ours": "neurodecode (`torch.load(mmap=True)`, placed without copies)",
             "baseline": "the original's way (`torch.load` whole file, then `load_state_dict`)"}
    lines += [f"| {names[r['mode']]} | {r['seconds']:.1f} | {r['peak_anon'] / 1e9:.2f} | "
              f"{r['peak_total'] / 1e9:.2f} |" for r in rows]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
