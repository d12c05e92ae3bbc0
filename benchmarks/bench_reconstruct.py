"""Reconstruction throughput: ``neurodecode.tasks.reconstruction.Reconstructor`` vs plain diffusers calls.

Same pipeline object (random weights: timing only), same embeddings, same low-level start images,
same steps, guidance, strength and resolution. "plain" is what research scripts do: one diffusers
call per image with its own ``torch.Generator``. "ours" batches ``--batch-size`` images per call
(one generator per image, so the images do not depend on the batching).

    python benchmarks/bench_reconstruct.py --size tiny                      # CPU, 32-px images
    python benchmarks/bench_reconstruct.py --size tiny --backend kandinsky
    python benchmarks/bench_reconstruct.py --size sd15 --device cuda        # SD-1.5 + IP-Adapter, 512 px
    python benchmarks/bench_reconstruct.py --size sdxl --device cuda --dtype bfloat16

``--size sd15`` / ``sdxl`` use the ``ip_adapter`` backend (the full SD-1.5 / SDXL UNet, VAE and text
encoders, random weights). A full SD-1.5 UNet step at 512 px takes ~14 s on 2 CPU cores: run those
sizes on a GPU. Backends without a native img2img (``unclip``, ``versatile``) are timed from noise
on both sides, since the plain pipelines have no ``strength`` argument.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURODECODE_TQDM", "off")


def _setup(args):
    from neurodecode._compat import ensure_torchvision

    ensure_torchvision()
    import numpy as np
    import torch

    from neurodecode.tasks.reconstruction import Reconstructor, make_random_pipeline

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if not args.device.startswith("cuda"):
        dtype = torch.float32
    t0 = time.perf_counter()
    pipe = make_random_pipeline(args.backend, size=args.size, device=args.device, torch_dtype=dtype)
    build_s = time.perf_counter() - t0
    size = args.resolution or (32 if args.size == "tiny" else None)  # Kandinsky's native size is 512 px
    recon = Reconstructor(args.backend, pipe, device=args.device, dtype=str(dtype).removeprefix("torch."),
                          height=size, width=size,
                          num_inference_steps=args.steps, guidance_scale=args.guidance,
                          strength=args.strength,
                          batch_size=args.batch_size, verbose="warning")
    rng = np.random.default_rng(0)
    dim = recon.embed_dim
    shape = (args.n_images, 17, dim) if recon.embed_kind == "tokens" else (args.n_images, dim)
    embeds = rng.standard_normal(shape).astype(np.float32)
    img2img = args.backend in ("kandinsky", "ip_adapter") and not args.from_noise
    low = None
    if img2img:
        low = rng.integers(0, 255, (args.n_images, recon.height, recon.width, 3), dtype=np.uint8)
    return pipe, recon, embeds, low, build_s


_TEXT2IMG: dict = {}


def _text2img(pipe):
    """The text-to-image pipeline sharing ``pipe``'s components (built once)."""
    import diffusers

    if "pipe" not in _TEXT2IMG:
        name = type(pipe).__name__
        cls = (diffusers.KandinskyV22Pipeline if name.startswith("Kandinsky") else
               diffusers.StableDiffusionXLPipeline if "XL" in name else diffusers.StableDiffusionPipeline)
        _TEXT2IMG["pipe"] = cls.from_pipe(pipe)
        _TEXT2IMG["pipe"].set_progress_bar_config(disable=True)
    return _TEXT2IMG["pipe"]


def _plain_call(args, recon, pipe, e, init, seed):
    """One image through the bare diffusers pipeline, as a research script would call it."""
    import torch

    gen = torch.Generator("cpu").manual_seed(seed)
    dev = pipe._execution_device
    dt = (pipe.image_unet if hasattr(pipe, "image_unet") else pipe.unet).dtype
    e = torch.from_numpy(e[None]).to(dev, dt)
    common = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "generator": gen,
              "output_type": "np"}
    size = {"height": recon.height, "width": recon.width}
    if args.backend == "ip_adapter":
        ip = [torch.cat([torch.zeros_like(e), e])[:, None]]
        if init is None:
            return _text2img(pipe)(prompt="", ip_adapter_image_embeds=ip, **size, **common).images
        return pipe(prompt="", image=init, strength=args.strength, ip_adapter_image_embeds=ip,
                    **common).images
    if args.backend == "kandinsky":
        kw = {"image_embeds": e, "negative_image_embeds": torch.zeros_like(e), **size, **common}
        if init is None:
            return _text2img(pipe)(**kw).images
        return pipe(image=init, strength=args.strength, **kw).images
    if args.backend == "unclip":
        return pipe(image_embeds=e, prompt="", **size, **common).images
    # versatile: the plain pipeline only takes images, so it embeds one with its CLIP image encoder
    from PIL import Image

    img = Image.new("RGB", (recon.height, recon.width), (127, 127, 127))
    return pipe(image=img, **size, **common).images


def _cuda_peak(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return None


def _reset_peak(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("tiny", "sd15", "sdxl"), default="tiny")
    p.add_argument("--backend", choices=("ip_adapter", "kandinsky", "unclip", "versatile"),
                   default="ip_adapter",
                   help="pipeline family (sd15 / sdxl: ip_adapter only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float16",
                   help="CUDA only; CPU always runs float32")
    p.add_argument("--resolution", type=int, default=None,
                   help="image size in pixels; default 32 (tiny), the pipeline's native size otherwise")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="default: 10 (tiny), 20 (sd15 / sdxl)")
    p.add_argument("--strength", type=float, default=0.75)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--from-noise", action="store_true", help="no low-level start image (text-to-image path)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    if args.size != "tiny" and args.backend != "ip_adapter":
        p.error("--size sd15 / sdxl is only available with --backend ip_adapter")
    if args.steps is None:
        args.steps = 10 if args.size == "tiny" else 20
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe, recon, embeds, low, build_s = _setup(args)
    init_all = None
    if low is not None:
        from neurodecode.tasks.reconstruction import _resize01

        init_all = _resize01(low, recon.height, recon.width)

    # warm-up both paths (first calls allocate kernels and workspaces)
    recon.reconstruct(embeds[: args.batch_size], None if low is None else low[: args.batch_size], seeds=0,
                      verbose="warning")
    _plain_call(args, recon, pipe, embeds[0], None if init_all is None else init_all[:1], 0)

    _reset_peak(args.device)
    t0 = time.perf_counter()
    res = recon.reconstruct(embeds, low, seeds=0, verbose="warning")
    ours_s = time.perf_counter() - t0
    ours_peak = _cuda_peak(args.device)

    _reset_peak(args.device)
    t0 = time.perf_counter()
    for i in range(args.n_images):
        _plain_call(args, recon, pipe, embeds[i], None if init_all is None else init_all[i:i + 1], i)
    plain_s = time.perf_counter() - t0
    plain_peak = _cuda_peak(args.device)

    out = {
        "backend": args.backend, "size": args.size, "pipeline": repr(recon).split(" | ")[1],
        "device": args.device, "dtype": recon.dtype_, "resolution": f"{recon.height}x{recon.width}",
        "n_images": args.n_images, "batch_size": args.batch_size, "steps": args.steps,
        "img2img": low is not None, "strength": args.strength if low is not None else None,
        "threads": torch.get_num_threads(), "build_s": round(build_s, 2),
        "ours_images_per_s": round(args.n_images / ours_s, 3),
        "plain_images_per_s": round(args.n_images / plain_s, 3),
        "speedup": round(plain_s / ours_s, 2),
        "ours_peak_gpu_gib": None if ours_peak is None else round(ours_peak, 2),
        "plain_peak_gpu_gib": None if plain_peak is None else round(plain_peak, 2),
        "output_shape": list(res.images.shape),
    }
    if args.json:
        print(json.dumps(out))
        return out
    start = f" img2img strength {args.strength}" if low is not None else " from noise"
    print(f"{out['pipeline']} | {out['resolution']} px | {args.steps} steps{start} | {args.device} "
          f"{out['dtype']} | {out['threads']} threads | {args.n_images} images")
    print(f"  neurodecode Reconstructor (batch {args.batch_size}): {out['ours_images_per_s']:.3f} images/s")
    print(f"  plain diffusers, one image per call:  {out['plain_images_per_s']:.3f} images/s")
    print(f"  speedup: {out['speedup']:.2f}x")
    if ours_peak is not None:
        print(f"  peak GPU memory: ours {ours_peak:.2f} GiB, plain {plain_peak:.2f} GiB")
    return out


if __name__ == "__main__":
    main()
