#!/usr/bin/env python3
"""The training step of bench_train_step (C++) done by diffusers + PEFT, the way diffusers'
train_text_to_image_lora_sdxl.py does it: the model's UNet2DConditionModel, a PEFT LoRA on every
Transformer2D linear (to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2, proj_in, proj_out:
kohya's 722-module preset on SDXL), fp32, epsilon loss at uniform timesteps (DDPMScheduler's
add_noise), backward, gradient clipping at 1, AdamW(1e-4, weight decay 1e-2). Prints the same
JSON line as bench_train_step: seconds per step (median, mean) and the peak resident memory.

    python3 bench_train_step_diffusers.py --model DIR [--batch 4] [--size 64] [--rank 4]
                                          [--steps 20] [--warmup 3]
"""
import argparse
import json
import resource
import statistics
import time

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=TARGETS))
    unet.train()
    parameters = [p for p in unet.parameters() if p.requires_grad]
    modules = sum(1 for name, _ in unet.named_modules() if name.endswith(".lora_A.default"))
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")

    latent = args.size // 8
    latents = torch.randn(args.batch, 4, latent, latent)
    context = torch.randn(args.batch, 77, unet.config.cross_attention_dim)
    pooled = torch.randn(args.batch, unet.config.projection_class_embeddings_input_dim
                         - 6 * unet.config.addition_time_embed_dim)
    time_ids = torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]] * args.batch,
                            dtype=torch.float32)
    seconds = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    print(json.dumps({
        "program": "diffusers+peft", "modules": modules, "batch": args.batch, "size": args.size,
        "rank": args.rank, "threads": torch.get_num_threads(),
        "median_seconds_per_step": round(statistics.median(seconds), 5),
        "mean_seconds_per_step": round(statistics.fmean(seconds), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "torch": torch.__version__}))


if __name__ == "__main__":
    main()
