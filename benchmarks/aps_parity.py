"""One APS search step side by side with the official code.

Loads the official `ArchMaster` (haolibai/APS-channel-search,
`nets/resnet_20s_width.py`) from a local copy, copies the library
controller's weights into it, lets the official controller sample an
architecture and replays it in the library, then takes one controller update
on both sides with the same reward inputs. Compares the logits, the
log-probability, the entropy, the remaining-budget features, the reward, the
baseline, the policy-loss gradient and the updated weights. Needs torch
(CPU) and the reference; it is not part of the test suite:

    PYTHONPATH=. python benchmarks/aps_parity.py \
        --reference=/path/to/APS-channel-search

`--seeds=0,1,2` repeats it for several sampled architectures. Prints one
line per quantity with the largest absolute difference and exits 1 if a
quantity that should match does not. The controller update differs by
design in one place: Keras's Adam adds epsilon to the bias-corrected
denominator differently from torch's, which shows up in the updated weights
(not in the gradient); it is printed and not checked.

It then takes one weight step and one projection (orthogonality) step of a
supernet basic block on both sides (`compare_block`): the block's
forward, the updated meta-weights and shortcuts, the orthogonality loss and
the updated, column-normalised projections of every candidate pair. The
block level is where the two agree: the official network-level sum counts
stage 1 twice and stage 2 never (spec section 7.5), which the library fixes
on purpose (docs/aps.md).
"""

import argparse
import pickle
import sys
import types

import keras
import numpy as np
import tensorflow as tf
import torch

from keras_compact import layers
from keras_compact.layers import aps as aps_layers
from keras_compact.methods import aps

CANDIDATES = (4, 8, 16, 32, 64)  # scripts/search/start_search_resnet_cifar.sh
MAX_MACS = 2.05e7
ENTROPY_COEFF, GAMMA, ARCH_LR, ARCH_WD = 4e-3, 0.99, 1.6e-4, 1e-3


def _official(reference):
    sys.path.insert(0, reference)
    from nets import resnet_20s_width  # noqa: E402 (the reference)

    master = resnet_20s_width.ArchMaster(
        19, len(CANDIDATES), controller_type="ENAS", controller_hid=100,
        max_flops=MAX_MACS)
    with open(f"{reference}/flops_table_resnet20_thinner.pkl", "rb") as f:
        master.table_flops = pickle.load(f)
    master.force_uniform = False
    return resnet_20s_width, master


def _copy_weights(controller, master):
    weights = [np.asarray(w) for w in controller.weights]
    with torch.no_grad():
        master.w_emb.weight.copy_(torch.from_numpy(weights[0]))
        for k, cell in enumerate(master.lstm):
            w_ih, w_hh, b_ih, b_hh = weights[1 + 4 * k:5 + 4 * k]
            cell.weight_ih.copy_(torch.from_numpy(w_ih.T.copy()))
            cell.weight_hh.copy_(torch.from_numpy(w_hh.T.copy()))
            cell.bias_ih.copy_(torch.from_numpy(b_ih))
            cell.bias_hh.copy_(torch.from_numpy(b_hh))
        master.w_soft.weight.copy_(torch.from_numpy(weights[-2].T.copy()))
        master.w_soft.bias.copy_(torch.from_numpy(weights[-1]))


def _torch_weights(master):
    """The official parameters in the library's weight order and layout."""
    out = [master.w_emb.weight]
    for cell in master.lstm:
        out += [cell.weight_ih.T, cell.weight_hh.T, cell.bias_ih,
                cell.bias_hh]
    out += [master.w_soft.weight.T, master.w_soft.bias]
    return [w.detach().numpy() for w in out]


def _torch_grads(master):
    out = [master.w_emb.weight.grad]
    for cell in master.lstm:
        out += [cell.weight_ih.grad.T, cell.weight_hh.grad.T,
                cell.bias_ih.grad, cell.bias_hh.grad]
    out += [master.w_soft.weight.grad.T, master.w_soft.bias.grad]
    return [g.numpy() for g in out]


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(a, b))


def compare(reference, seed, baseline=0.05):
    """Returns `[(quantity, max |diff|, tolerance or None)]` for one seed."""
    module, master = _official(reference)
    keras.utils.set_random_seed(seed)
    net = aps.APSResNetCifar(20, CANDIDATES, num_classes=10)
    search = aps.ChannelSearchModel(net, MAX_MACS, entropy_coeff=ENTROPY_COEFF,
                                    baseline_decay=GAMMA,
                                    arch_weight_decay=ARCH_WD)
    search.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.0),
                   keras.optimizers.Adam(ARCH_LR, beta_1=0.5, beta_2=0.999,
                                         epsilon=1e-8))
    controller = search.controller
    _copy_weights(controller, master)

    flops = []
    compute = master._compute_flops

    def recorded(partial):
        value = compute(partial)
        flops.append(float(value))
        return value

    master._compute_flops = recorded
    torch.manual_seed(seed)
    arch, log_prob, entropy = master()
    official_left = [(MAX_MACS - f) / MAX_MACS for f in flops]
    arch = arch.numpy().astype("int32")
    rows = []
    mine = controller.evaluate(arch)
    rows.append(("logits", _max_diff([master.logits.detach().numpy()],
                                     [mine[3]]), 1e-5))
    rows.append(("log_prob", abs(log_prob.item() - float(mine[1])), 1e-4))
    rows.append(("entropy", abs(entropy.item() - float(mine[2])), 1e-4))
    rows.append(("budget_feature", _max_diff(
        [official_left], [controller.remaining_budget(arch)]), 1e-6))

    # One controller update on a fixed batch of logits and labels.
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(256, 10)).astype("float32")
    labels = rng.integers(0, 10, 256)
    master._compute_flops = compute
    stub = types.SimpleNamespace(
        forward=lambda x: (torch.from_numpy(logits), [], log_prob, entropy,
                           torch.from_numpy(arch.astype("int64"))),
        args=types.SimpleNamespace(flops=True, max_flops=MAX_MACS,
                                   flops_coeff=[-0.0, -0.1]),
        arch_master=master, entropy_coeff=ENTROPY_COEFF)
    optimizer = torch.optim.Adam(master.parameters(), lr=ARCH_LR,
                                 betas=(0.5, 0.999), weight_decay=ARCH_WD)
    optimizer.zero_grad()
    loss, official_reward, _ = module.ResNetChanSearch._loss_arch(
        stub, None, torch.from_numpy(labels), baseline)
    loss.backward()
    official_grads = _torch_grads(master)
    optimizer.step()
    official_baseline = baseline * GAMMA + float(official_reward) * (1 - GAMMA)

    search.baseline.assign(baseline)
    value = search.arch_reward(logits, labels, arch)
    rows.append(("reward", abs(float(value) - float(official_reward)), 1e-6))
    variables = controller.trainable_variables
    with tf.GradientTape() as tape:
        _, lp, ent, _ = controller.evaluate(arch)
        policy = -lp * (value - baseline) - ENTROPY_COEFF * ent
    # torch's `.grad` holds the loss gradient; its coupled L2 is added
    # inside `step`, as the library adds it in `_apply`.
    grads = [tf.convert_to_tensor(g)
             for g in tape.gradient(policy, variables)]
    rows.append(("loss_gradient", _max_diff(official_grads, grads), 1e-6))
    before = [np.asarray(v) for v in variables]
    with tf.GradientTape() as tape:
        _, lp, ent, _ = controller.evaluate(arch)
    search.controller_update(tape, lp, ent, value)
    rows.append(("baseline", abs(float(search.baseline)
                                 - official_baseline), 1e-7))
    official_step = [a - b for a, b in zip(_torch_weights(master), before)]
    step = [np.asarray(v) - b for v, b in zip(variables, before)]
    norm = np.sqrt(sum(float(np.sum(np.square(s))) for s in official_step))
    diff = np.sqrt(sum(float(np.sum(np.square(a - b)))
                       for a, b in zip(official_step, step)))
    rows.append(("update_rel_norm (Adam epsilon)", diff / norm, None))
    return rows


def _starts(candidates):
    return np.cumsum([0, *candidates[:-1]])


def _copy_block(block, official, candidates):
    """Library `APSBasicBlock` weights into the official `BasicBlock`."""
    n, starts = len(candidates), _starts(candidates)
    pairs = [(o, i) for o in range(n) for i in range(n)]
    with torch.no_grad():
        for conv, kernel, projections in (
                (block.conv1, official.conv1_kernel, official.tprojection1s),
                (block.conv2, official.conv2_kernel, official.tprojection2s)):
            kernel.copy_(torch.from_numpy(
                np.asarray(conv.kernel).transpose(3, 2, 0, 1).copy()))
            p, q = np.asarray(conv.p), np.asarray(conv.q)
            for o, i in pairs:
                so, si = starts[o], starts[i]
                projection = projections[o * n + i]
                projection.P.data = torch.from_numpy(
                    p[i][:, so:so + candidates[o]].copy())
                projection.Q.data = torch.from_numpy(
                    q[o][:, si:si + candidates[i]].copy())
        shortcut = np.asarray(block.shortcut.kernel)
        for o, i in pairs:
            so, si = starts[o], starts[i]
            w = shortcut[si:si + candidates[i], so:so + candidates[o]]
            official.shortcuts[o * n + i].conv.weight.copy_(
                torch.from_numpy(w.T.copy())[:, :, None, None])


def _block_state(block, candidates):
    """Library block weights, unpacked per pair as the official stores
    them: `{name: array}`."""
    n, starts = len(candidates), _starts(candidates)
    out = {}
    for name, conv in (("1", block.conv1), ("2", block.conv2)):
        out[f"conv{name}_kernel"] = np.asarray(conv.kernel).transpose(
            3, 2, 0, 1)
        p, q = np.asarray(conv.p), np.asarray(conv.q)
        for o in range(n):
            for i in range(n):
                so, si = starts[o], starts[i]
                out[f"P{name}_{o}{i}"] = p[i][:, so:so + candidates[o]]
                out[f"Q{name}_{o}{i}"] = q[o][:, si:si + candidates[i]]
    shortcut = np.asarray(block.shortcut.kernel)
    for o in range(n):
        for i in range(n):
            so, si = starts[o], starts[i]
            out[f"shortcut_{o}{i}"] = shortcut[
                si:si + candidates[i], so:so + candidates[o]].T
    return out


def _official_state(official, n):
    out = {"conv1_kernel": official.conv1_kernel.detach().numpy(),
           "conv2_kernel": official.conv2_kernel.detach().numpy()}
    for o in range(n):
        for i in range(n):
            for name, projections in (("1", official.tprojection1s),
                                      ("2", official.tprojection2s)):
                projection = projections[o * n + i]
                out[f"P{name}_{o}{i}"] = projection.P.detach().numpy()
                out[f"Q{name}_{o}{i}"] = projection.Q.detach().numpy()
            out[f"shortcut_{o}{i}"] = official.shortcuts[
                o * n + i].conv.weight.detach().numpy()[:, :, 0, 0]
    return out


def compare_block(reference, seed, arch=(2, 4, 1), strides=2, side=8):
    """One weight step and one projection step of a supernet block.

    The official `BasicBlock` (train mode, a fixed linear loss on its
    output) against `layers.APSBasicBlock` with the same weights: SGD with
    momentum 0.9 and coupled weight decay 2e-4 on the meta-weights (lr
    0.1), then SGD on `5e-3` times the block's orthogonality loss (lr 1e-3)
    and the column normalisation of every P, Q. PyTorch 1.1 zero-filled the
    gradients of unsampled pairs (they still decay): emulated here.
    """
    sys.path.insert(0, reference)
    from nets import resnet_20s_width  # noqa: E402 (the reference)

    candidates, meta = list(CANDIDATES), sum(CANDIDATES)
    n = len(candidates)
    keras.utils.set_random_seed(seed)
    args = types.SimpleNamespace(overlap=1.0, ortho_type="l1", use_aux=False)
    official = resnet_20s_width.BasicBlock(
        args, meta, meta, strides, max_width=meta,
        candidate_width=candidates)
    official.train()
    block = layers.APSBasicBlock(CANDIDATES, strides=strides, meta_width=meta)
    rng = np.random.default_rng(seed)
    a_in, _, a_out = arch
    x = np.zeros((8, side, side, candidates[-1]), "float32")
    x[..., :candidates[a_in]] = rng.normal(
        size=(8, side, side, candidates[a_in]))
    block.build(x.shape)
    _copy_block(block, official, candidates)
    out_side = (side - 1) // strides + 1
    target = np.zeros((8, out_side, out_side, candidates[-1]), "float32")
    target[..., :candidates[a_out]] = rng.normal(
        size=(8, out_side, out_side, candidates[a_out]))
    rows = []

    # The weight step (compared relative to the largest change: the loss
    # is a sum over 4k outputs, so the steps are large).
    start = _block_state(block, candidates)
    meta_official = [official.conv1_kernel, official.conv2_kernel] + [
        s.conv.weight for s in official.shortcuts]
    torch_sgd = torch.optim.SGD(meta_official, lr=0.1, momentum=0.9,
                                weight_decay=2e-4)
    torch_sgd.zero_grad(set_to_none=False)
    y, _ = official(torch.from_numpy(x[..., :candidates[a_in]].transpose(
        0, 3, 1, 2).copy()), list(arch))
    loss = (y * torch.from_numpy(target[..., :candidates[a_out]].transpose(
        0, 3, 1, 2).copy())).sum()
    loss.backward()
    torch_sgd.step()
    meta_mine = [block.conv1.kernel, block.conv2.kernel,
                 block.shortcut.kernel]
    with tf.GradientTape() as tape:
        mine = block(x, choice=list(arch), training=True)
        my_loss = tf.reduce_sum(mine * target)
    rows.append(("block_forward_loss", abs(float(my_loss) - loss.item()),
                 1e-3 * abs(loss.item())))
    grads = tape.gradient(my_loss, meta_mine)
    sgd = keras.optimizers.SGD(0.1, momentum=0.9)
    sgd.apply([g + 2e-4 * v for g, v in zip(grads, meta_mine)], meta_mine)
    official_state = _official_state(official, n)
    state = _block_state(block, candidates)
    weights = [k for k in state if k.startswith(("conv", "shortcut"))]
    step = max(float(np.max(np.abs(official_state[k] - start[k])))
               for k in weights)
    rows.append(("weight_update (relative)", _max_diff(
        [official_state[k] for k in weights],
        [state[k] for k in weights]) / step, 1e-4))

    # The projection (APS-T) step.
    projections_official = [p for projections in (
        official.tprojection1s, official.tprojection2s)
        for t_ in projections for p in (t_.P, t_.Q)]
    for p in projections_official:
        p.requires_grad_(True)
    torch_proj = torch.optim.SGD(projections_official, lr=1e-3, momentum=0.9,
                                 weight_decay=2e-4)
    torch_proj.zero_grad(set_to_none=False)
    orthogonal, _ = official.orthogonal_regularization()
    (5e-3 * orthogonal).backward()
    torch_proj.step()
    with torch.no_grad():
        for p in projections_official:
            p.data = p.data / torch.sqrt(torch.diag(p.data.t() @ p.data))
    mine = [v for conv in block.convs for v in conv.projection_weights]
    with tf.GradientTape() as tape:
        my_orthogonal = sum(aps_layers.offdiagonal_l1(g) for conv in
                            block.convs for g in conv.orthogonality_groups())
        weighted = 5e-3 * my_orthogonal
    rows.append(("orthogonality_loss", abs(float(my_orthogonal)
                                           - orthogonal.item()),
                 1e-5 * orthogonal.item()))
    grads = tape.gradient(weighted, mine)
    sgd = keras.optimizers.SGD(1e-3, momentum=0.9)
    sgd.apply([g + 2e-4 * v for g, v in zip(grads, mine)], mine)
    for v in mine:
        v.assign(aps_layers.normalize_columns(v))
    official_state = _official_state(official, n)
    state = _block_state(block, candidates)
    keys = [k for k in state if k.startswith(("P", "Q"))]
    rows.append(("projection_update", _max_diff(
        [official_state[k] for k in keys], [state[k] for k in keys]), 1e-6))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True,
                        help="a local copy of haolibai/APS-channel-search")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    failed = False
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, diff, tolerance in (compare(args.reference, seed)
                                      + compare_block(args.reference, seed)):
            ok = tolerance is None or diff <= tolerance
            failed |= not ok
            limit = "" if tolerance is None else f" (tolerance {tolerance:g})"
            print(f"seed {seed} {name:32s} {diff:.3g}{limit}"
                  f"{'' if ok else '  MISMATCH'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
