"""Peer timing for `memseg bench`: Meta's own SAM2 code (PyPI `sam2`, PyTorch CPU, fp32).

Run by `memseg bench encoder|memory-attention --peer PYTHON` on the same machine, input size and thread count, so the two are
measured side by side. Prints one JSON object. Needs the reference venv of tests/fixtures/make_fixtures.py.
"""
import argparse
import json
import math
import time

import torch
from sam2.build_sam import build_sam2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--part", choices=["encoder", "memory-attention", "propagate", "click"], default="encoder")
    ap.add_argument("--slices", type=int, default=10, help="volume length (propagate)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--memories", type=int, default=1, help="past frames attended to (memory-attention)")
    ap.add_argument("--after-run", action="store_true", help="click: corrections on the last frame of a --slices propagation")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    g = a.image_size // 16
    overrides = [f"++model.image_size={a.image_size}"]
    if a.image_size != 1024:
        overrides += [f"++model.memory_attention.layer.self_attention.feat_sizes=[{g},{g}]",
                      f"++model.memory_attention.layer.cross_attention.feat_sizes=[{g},{g}]"]
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    if a.part == "propagate":
        return propagate(a, overrides, sync)
    if a.part == "click":
        return click(a, overrides, sync)
    model = build_sam2(a.config, ckpt_path=None, device=a.device, mode="eval", hydra_overrides_extra=overrides)
    dev = torch.device(a.device)
    if a.part == "encoder":
        x = torch.randn(1, 3, a.image_size, a.image_size, device=dev)
        step = lambda: model.forward_image(x)
    else:
        # One tracked frame attending to `memories` past frames: their spatial memories and object pointers
        # (each hidden_dim pointer split into hidden_dim / mem_dim tokens), as _prepare_memory_conditioned_features
        # assembles them.
        c, m = model.hidden_dim, model.mem_dim
        ptr_tokens = a.memories * (c // m)
        tokens = a.memories * g * g + ptr_tokens
        curr, curr_pos = torch.randn(g * g, 1, c, device=dev), torch.randn(g * g, 1, c, device=dev)
        memory, memory_pos = torch.randn(tokens, 1, m, device=dev), torch.randn(tokens, 1, m, device=dev)
        step = lambda: model.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=memory,
                                              memory_pos=memory_pos, num_obj_ptr_tokens=ptr_tokens)
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.runs):
            start = time.perf_counter()
            step()
            sync()
            if i >= a.warmup:
                times.append((time.perf_counter() - start) * 1000)
    where = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(json.dumps({"peer": f"Meta sam2 (PyTorch {torch.__version__} {where} fp32)", "threads": a.threads,
                      "image_size": a.image_size, "part": a.part, "memories": a.memories, "runs_ms": times}))


def synthetic_slice(z, n, size):
    """The same synthetic slice as memseg's bench::synthetic_slice (a gradient and a disc whose radius follows z)."""
    import numpy as np
    r = size * (0.15 + 0.1 * math.sin(z / max(n, 1) * math.pi))
    c = size / 2
    y, x = np.mgrid[0:size, 0:size]
    v = (60 + (x + y) * 60 // (2 * size)).astype(np.uint8)
    v[np.sqrt((x - c) ** 2 + (y - c) ** 2) < r] = 200
    return np.stack([v, v, v], -1)


def propagate(a, overrides, sync):
    """Meta's SAM2VideoPredictor over `slices` synthetic frames (JPEG files, as init_state reads them), a mask on
    the middle frame, propagate forward then reverse; times every tracked frame as it is yielded."""
    import resource
    import tempfile
    import numpy as np
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor
    predictor = build_sam2_video_predictor(a.config, ckpt_path=None, device=a.device, hydra_overrides_extra=overrides)
    mid = a.slices // 2
    with tempfile.TemporaryDirectory() as d:
        for z in range(a.slices):
            Image.fromarray(synthetic_slice(z, a.slices, a.image_size)).save(f"{d}/{z:05d}.jpg", quality=100)
        with torch.inference_mode():
            state = predictor.init_state(d)
            mask = torch.from_numpy(synthetic_slice(mid, a.slices, a.image_size)[..., 0] == 200)
            predictor.add_new_mask(state, mid, 1, mask)
            times, start, total = [], time.perf_counter(), time.perf_counter()
            for reverse in (False, True):
                for frame, _, masks in predictor.propagate_in_video(state, reverse=reverse):
                    masks.cpu()
                    sync()
                    if frame != mid:
                        times.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
            total = time.perf_counter() - total
    where = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    peak = torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peer": f"Meta sam2 video predictor (PyTorch {torch.__version__} {where} fp32)", "threads": a.threads,
                      "image_size": a.image_size, "part": a.part, "slices": a.slices, "runs_ms": times,
                      "total_s": total, "peak_mib": peak}))


def bench_click(k, size):
    """The k-th click of memseg's bench::bench_click: (x, y, label)."""
    spread = lambda golden: math.floor(size * (0.35 + 0.3 * ((k * golden) % 1.0)))
    return spread(0.618), spread(0.382), 1 if k % 2 == 0 else 0


def click(a, overrides, sync):
    """Meta's SAM2VideoPredictor on a one-frame video: a first click (after init_state encoded the frame), then
    `runs` clicks each appended to the ones before (clear_old_points=False), as a user clicks; times each
    add_new_points_or_box after the first, which returns the mask at the frame's size. With --after-run:
    `slices` frames propagated from the middle one's mask (add_all_frames_to_correct_as_cond, as the page),
    then `runs` correction clicks on the last frame, every one timed."""
    import tempfile
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor
    if a.after_run:
        overrides = overrides + ["++model.add_all_frames_to_correct_as_cond=true"]
    predictor = build_sam2_video_predictor(a.config, ckpt_path=None, device=a.device, hydra_overrides_extra=overrides)
    n = a.slices if a.after_run else 1
    frame = n - 1
    times = []
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        for z in range(n):
            Image.fromarray(synthetic_slice(z, n, a.image_size)).save(f"{d}/{z:05d}.jpg", quality=100)
        state = predictor.init_state(d)
        if a.after_run:
            mid = n // 2
            predictor.add_new_mask(state, mid, 1, torch.from_numpy(synthetic_slice(mid, n, a.image_size)[..., 0] == 200))
            for reverse in (False, True):
                for _ in predictor.propagate_in_video(state, reverse=reverse):
                    pass
        first_timed = 0 if a.after_run else 1
        for k in range(a.runs + 1 - first_timed):
            x, y, label = bench_click(k, a.image_size)
            start = time.perf_counter()
            _, _, masks = predictor.add_new_points_or_box(state, frame, 1, points=[[x, y]], labels=[label], clear_old_points=k == 0)
            (masks > 0).cpu()
            sync()
            if k >= first_timed:
                times.append((time.perf_counter() - start) * 1000)
    where = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(json.dumps({"peer": f"Meta sam2 video predictor, clicks (PyTorch {torch.__version__} {where} fp32)", "threads": a.threads,
                      "image_size": a.image_size, "part": a.part, "runs_ms": times}))


if __name__ == "__main__":
    main()
