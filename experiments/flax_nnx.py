"""A Flax nnx module trained by our explicit BPTT: Embedding -> bidirectional LSTM x 2 -> softmax.

The task: token sequences of variable length (ids 1..V-1, 0 unused), labelled 1 when more of their
tokens are "low" (id < V/2) than "high", else 0 (ties dropped): counting over the whole
sequence, which both directions and both layers see. ``RecurrentModel(spec)`` is trained with
``nnx.Optimizer(model, optax.adam(...))`` and ``nnx.value_and_grad(model.loss)``; the module's
loss is a ``custom_vjp`` whose backward is ``model_bptt`` (checked against ``jax.grad`` of the
plain loss at the start). Five seeds, each a whole run (data, initialization, dropout, batches).
Plot: training loss and held-out accuracy (mean and band over the seeds); table: the final numbers,
mean ± standard deviation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from _common import main_guard, pm, publish, seeds_for
from flax import nnx

import perceptron1_jax as p1
from perceptron1_jax.diagnostics import max_relative_error
from perceptron1_jax.flax_module import RecurrentModel, params_of


def make_data(rng, n, vocab, max_len):
    """``(ids (n, max_len), lengths (n,), labels (n,))``: majority of low vs high ids."""
    lengths = rng.integers(2, max_len + 1, n) | 1  # odd lengths: no ties
    lengths = np.minimum(lengths, max_len - (max_len % 2 == 0))
    ids = rng.integers(1, vocab, (n, max_len))
    ids[np.arange(max_len)[None, :] >= lengths[:, None]] = 0  # padding, never read
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    low = ((ids < vocab // 2) & (ids > 0) & valid).sum(1)
    labels = (2 * low > lengths).astype(np.int32)
    return jnp.asarray(ids, jnp.int32), jnp.asarray(lengths, jnp.int32), jnp.asarray(labels)


def main(quick: bool = False, out=None, seed: int = 0, vocab: int = 20, max_len: int = 15, hidden: int = 32,
         embed: int = 16, dropout: float = 0.2, steps: int = 400, batch: int = 32, lr: float = 3e-3):
    if quick:
        hidden, embed, steps, max_len = 4, 3, 6, 5
    spec = p1.ModelSpec([p1.LayerSpec("lstm", hidden, True), p1.LayerSpec("lstm", hidden, True)], 2,
                        vocab_size=vocab, embed_size=embed, dropout=dropout)
    runs = [_train_one(seed + k, spec, vocab, max_len, steps, batch, lr) for k in range(seeds_for(quick))]
    finals = [history[-1] for history, _, _ in runs]
    rows = [{"model": f"Embedding -> biLSTM x 2 -> softmax (nnx, dropout {dropout:g})", "seeds": len(runs),
             "steps": steps, "final_train_loss": pm([h["loss"] for h in finals], 4),
             "eval_accuracy": pm([h["eval_accuracy"] for h in finals]),
             "chance": pm([chance for _, _, chance in runs]),
             "explicit_vs_jax_grad_max_relative_error_float32": max(agreement for _, agreement, _ in runs)}]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps_logged = [h["step"] for h in runs[0][0]]
    for ax, key in ((ax_loss, "loss"), (ax_acc, "eval_accuracy")):
        values = np.asarray([[h[key] for h in history] for history, _, _ in runs])
        line = ax.plot(steps_logged, values.mean(0), "o-", ms=3, label=f"mean of {len(runs)} seeds")[0]
        ax.fill_between(steps_logged, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, lw=0)
    ax_loss.set(xlabel="step", ylabel="training cross-entropy (nats)", title="nnx module, explicit BPTT")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy (fraction)", ylim=(0, 1.02),
               title="majority of low vs high tokens")
    return publish(fig, out, "flax_nnx", rows, "A Flax nnx module trained by the explicit BPTT (mean ± std over seeds)")


def _train_one(seed, spec, vocab, max_len, steps, batch, lr):
    """One seed's run: ``(history, explicit-vs-jax.grad agreement, chance)``."""
    rng = np.random.default_rng(seed)
    train_ids, train_lengths, train_labels = make_data(rng, 2048, vocab, max_len)
    eval_ids, eval_lengths, eval_labels = make_data(rng, 512, vocab, max_len)
    model = RecurrentModel(spec, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
    # The module's gradient is the explicit BPTT: compare it with jax.grad of the plain loss.
    key = jax.random.key(seed)
    batch0 = (train_ids[:batch], train_labels[:batch], train_lengths[:batch])
    _, ours = nnx.value_and_grad(lambda m: m.loss(batch0[0], batch0[1], batch0[2], dropout_key=key))(model)
    reference = jax.grad(p1.model_loss)(model.params(), batch0[0], batch0[1], spec, batch0[2], key)
    agreement = max_relative_error(params_of(ours), reference)
    history = []
    for step in range(1, steps + 1):
        index = rng.integers(0, train_ids.shape[0], batch)
        loss = _train_step(model, optimizer, train_ids[index], train_labels[index], train_lengths[index],
                           jax.random.fold_in(key, step))
        if step % max(steps // 20, 1) == 0 or step == steps:
            history.append({"step": step, "loss": float(loss),
                            "eval_accuracy": float(_accuracy(model, eval_ids, eval_labels, eval_lengths))})
    return history, agreement, float(max(jnp.mean(eval_labels), 1 - jnp.mean(eval_labels)))


@nnx.jit
def _train_step(model, optimizer, ids, labels, lengths, key):
    loss, grads = nnx.value_and_grad(lambda m: m.loss(ids, labels, lengths, dropout_key=key))(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def _accuracy(model, ids, labels, lengths):
    return jnp.mean(jnp.argmax(model(ids, lengths), -1) == labels)


if __name__ == "__main__":
    main_guard(main)
