#!/usr/bin/env python3
"""Meta's SAM2.1-tiny image encoder as ONNX, for the browser bench page (www/bench.html) to run in
onnxruntime-web next to memseg's own encoder on the SAME weights and input.

For each requested size it builds the model from Meta's own Hydra config (sam2's
``configs/sam2.1/sam2.1_hiera_t.yaml`` through ``sam2.build_sam.build_sam2``), with either seeded random
weights (the initialisation of tests/fixtures/make_fixtures.py) or a given checkpoint, and writes into
models/ (never committed):

* ``<name>.pt``   -- the weights in Meta's checkpoint layout (``{"model": state_dict}``), what memseg loads
                     (with --checkpoint / --reduced: a symbolic link to that file instead);
* ``<name>.onnx`` -- ``forward_image`` of that same model: input ``image`` [1, 3, S, S] (normalised), outputs
                     ``backbone_fpn_0..2`` (highest resolution first, conv_s0/conv_s1 applied: exactly the
                     features memseg's ``forward_image`` returns; the last one is ``vision_features``);
* ``<name>.json`` -- what the page needs: the .pt and .onnx names, the Hydra overrides memseg must apply,
                     the size and the seed.

The ONNX graph is exported with PyTorch's TorchScript exporter (``dynamo=False``): the dynamo exporter
needs onnxscript, which Meta's environment does not have.  Then onnxruntime (Python) runs it once on a
seeded input and compares with PyTorch, so a wrong export fails here and not in the browser.

Environment: the venv of tests/fixtures/make_fixtures.py (torch, sam2 1.1.0, hydra-core) plus onnx and
onnxruntime.

    V/bin/python bench/export_onnx.py                        # full tiny, random weights, 512 and 1024
    V/bin/python bench/export_onnx.py --sizes 512
    V/bin/python bench/export_onnx.py --reduced              # the reduced config of the browser tests,
                                                             # on tests/fixtures/tiny21_reduced_256.pt
    V/bin/python bench/export_onnx.py --checkpoint sam2.1_hiera_tiny.pt --sizes 1024

The smoke test's files tests/fixtures/tiny21_reduced_256.{onnx,json} come from
``--reduced --sizes 256 --out tests/fixtures`` (deterministic: a re-run gives the same bytes).
"""

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CFG21 = "configs/sam2.1/sam2.1_hiera_t.yaml"
SEED = 2111  # make_fixtures.py's seed for tiny21_full_1024
REDUCED_CHECKPOINT = os.path.join(REPO, "tests", "fixtures", "tiny21_reduced_256.pt")


def load_make_fixtures():
    """tests/fixtures/make_fixtures.py as a module: its config overrides and seeded initialisation are the
    ones every parity fixture uses, so the bench's model is built exactly the same way."""
    path = os.path.join(REPO, "tests", "fixtures", "make_fixtures.py")
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ForwardImage(torch.nn.Module):
    """``SAM2Base.forward_image`` with its list outputs flattened, as ONNX wants."""

    def __init__(self, sam):
        super().__init__()
        self.sam = sam

    def forward(self, image):
        fpn = self.sam.forward_image(image)["backbone_fpn"]
        return tuple(fpn)


def build(overrides, checkpoint):
    from sam2.build_sam import build_sam2

    # build_sam2's own loader is strict: a checkpoint that does not fit the config fails here.
    return build_sam2(CFG21, ckpt_path=checkpoint, device="cpu", mode="eval", hydra_overrides_extra=overrides)


def export_one(name, overrides, size, checkpoint, seed, out_dir, mf):
    torch.manual_seed(seed)
    model = build(overrides, checkpoint)
    if checkpoint is None:
        mf.randomize_(model, seed)
        pt_name = f"{name}.pt"
        torch.save({"model": model.state_dict()}, os.path.join(out_dir, pt_name))
    else:
        pt_name = link_into(checkpoint, out_dir)
    wrapper = ForwardImage(model).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    freeze_pos_embed(model.image_encoder.trunk, x)
    onnx_name = f"{name}.onnx"
    onnx_path = os.path.join(out_dir, onnx_name)
    outputs = [f"backbone_fpn_{i}" for i in range(3)]
    with torch.no_grad():
        reference = [t.numpy() for t in wrapper(x)]
        torch.onnx.export(wrapper, (x,), onnx_path, input_names=["image"], output_names=outputs,
                          opset_version=17, dynamo=False, do_constant_folding=True)
    drop_value_info(onnx_path)
    check_with_onnxruntime(onnx_path, x.numpy(), reference, outputs)
    meta = {
        "name": name, "image_size": size, "seed": seed, "overrides": overrides,
        "pt": pt_name, "onnx": onnx_name,
        "outputs": {n: list(r.shape) for n, r in zip(outputs, reference)},
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


def freeze_pos_embed(trunk, x):
    """Hiera's position embedding depends on the weights and the input size only, and the size is fixed per
    export: compute it once with Meta's own ``_get_pos_embed`` and let the graph hold the result. Traced as
    is, its ``tile`` becomes an ONNX ``If`` whose branches disagree on rank (4 vs 5 dims), which
    onnxruntime-web refuses ("Can't merge shape info")."""
    with torch.no_grad():
        hw = trunk.patch_embed(x).shape[1:3]
        fixed = trunk._get_pos_embed(hw).detach().clone()

    def pos_embed(requested):
        assert tuple(requested) == tuple(hw), f"exported for a {tuple(hw)} grid, got {tuple(requested)}"
        return fixed

    trunk._get_pos_embed = pos_embed


def drop_value_info(path):
    """Removes the exporter's shape annotations of intermediate tensors. Some are wrong for Hiera's window
    partition (a Concat declared with 5 dims where 4 are inferred): onnxruntime (Python) merges them
    leniently, onnxruntime-web refuses the model. Without them every runtime infers the shapes itself."""
    import onnx

    model = onnx.load(path)
    del model.graph.value_info[:]
    onnx.save(model, path)


def link_into(checkpoint, out_dir):
    """Makes a given checkpoint reachable under models/ (served at /models/), as a symbolic link: the page
    fetches the weights from there."""
    name = os.path.basename(checkpoint)
    target = os.path.join(out_dir, name)
    if os.path.abspath(checkpoint) != os.path.abspath(target):
        if os.path.lexists(target):
            os.remove(target)
        os.symlink(os.path.abspath(checkpoint), target)
    return name


def check_with_onnxruntime(path, x, reference, names, rel_tol=1e-3):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(names, {"image": x})
    for name, g, r in zip(names, got, reference):
        err = float(np.abs(g - r).max() / (r.std() + 1e-12))
        if not err <= rel_tol:
            sys.exit(f"{path}: {name} differs from PyTorch by {err:.2e} x std (tolerance {rel_tol})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024", help="comma-separated input sizes (multiples of 32)")
    p.add_argument("--checkpoint", help="an official SAM2.1-tiny .pt instead of seeded random weights")
    p.add_argument("--reduced", action="store_true",
                   help="the reduced config of the browser tests, on tests/fixtures/tiny21_reduced_256.pt")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", default=os.path.join(REPO, "models"))
    args = p.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sys.exit(f"--sizes: '{args.sizes}' is not a comma-separated list of integers")
    bad = [s for s in sizes if s <= 0 or s % 32]
    if bad:
        sys.exit(f"--sizes: {bad} are not positive multiples of 32 (Hiera's stride-32 grid)")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        sys.exit(f"--checkpoint: {args.checkpoint} is not a file")
    if args.reduced and args.checkpoint:
        sys.exit("--reduced uses tests/fixtures/tiny21_reduced_256.pt: do not give --checkpoint too")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    mf = load_make_fixtures()
    for size in sizes:
        if args.reduced:
            export_one(f"tiny21_reduced_{size}", mf.reduced_overrides(size), size, REDUCED_CHECKPOINT,
                       2101, args.out, mf)
        else:
            kind = "ckpt" if args.checkpoint else "full"
            export_one(f"tiny21_{kind}_{size}", mf.full_overrides(size), size, args.checkpoint, args.seed,
                       args.out, mf)


if __name__ == "__main__":
    main()
