"""``perceptron1 gradcheck``: the explicit BPTT against ``jax.grad`` on random parameters, in
float64, one line per cell and parameter."""

from __future__ import annotations

from perceptron1_jax.cli.common import CELL_NAMES, require_positive


def add_parser(commands) -> None:
    """``perceptron1 gradcheck``'s options."""
    check = commands.add_parser("gradcheck", help="explicit BPTT vs jax.grad on random params (float64)")
    check.add_argument("--cell", choices=[*CELL_NAMES, "all"], default="all", help="a cell, or all of them")
    check.add_argument("--batch", type=int, default=4)
    check.add_argument("--seq-len", type=int, default=12)
    check.add_argument("--input", type=int, default=3)
    check.add_argument("--hidden", type=int, default=8)
    check.add_argument("--classes", type=int, default=5)
    check.add_argument("--many-to-many", action="store_true", help="a label at every step")
    check.add_argument("--lengths", action="store_true", help="random sequence lengths")
    check.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import jax

    require_positive(args, "batch", "seq_len", "input", "hidden", "classes")
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)  # float64 for this command only; restored below
    try:
        return _gradcheck_table(args)
    finally:
        jax.config.update("jax_enable_x64", previous)


def _gradcheck_table(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import perceptron1_jax as p1
    from perceptron1_jax.diagnostics import max_relative_error

    rng = np.random.default_rng(args.seed)
    cells = list(CELL_NAMES) if args.cell == "all" else [args.cell]
    print(f"explicit BPTT vs jax.grad, float64, batch {args.batch}, time {args.seq_len}, input {args.input}, "
          f"hidden {args.hidden}, classes {args.classes}, "
          f"{'many-to-many' if args.many_to_many else 'many-to-one'}{', random lengths' if args.lengths else ''}")
    print(f"{'cell':6} {'parameter':14} {'max relative error':>20}")
    worst = 0.0
    for cell in cells:
        params = p1.init_params(jax.random.key(args.seed), cell, args.input, args.hidden, args.classes,
                                dtype=jnp.float64)
        params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.standard_normal(a.shape)), params)
        xs = jnp.asarray(rng.standard_normal((args.batch, args.seq_len, args.input)))
        shape = (args.batch, args.seq_len) if args.many_to_many else (args.batch,)
        labels = jnp.asarray(rng.integers(0, args.classes, shape), jnp.int32)
        lengths = jnp.asarray(rng.integers(1, args.seq_len + 1, args.batch), jnp.int32) if args.lengths else None
        _, ours = p1.bptt(params, xs, labels, cell, lengths)
        ref = jax.grad(p1.loss)(params, xs, labels, cell, lengths)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(ref), strict=True):
            err = max_relative_error(a, b)
            worst = max(worst, err)
            print(f"{cell:6} {'/'.join(k.key for k in path):14} {err:20.2e}")
    print(f"worst: {worst:.2e} ({'PASS' if worst < 1e-6 else 'FAIL'} at rtol 1e-6)")
    return 0 if worst < 1e-6 else 1
