"""``perceptron1 generate``: text from a language model run, sampled one token per step."""

from __future__ import annotations

import sys
from pathlib import Path

from perceptron1_jax.cli.common import MEMBER_HELP, UsageError, open_run


def add_parser(commands) -> None:
    """``perceptron1 generate``'s options."""
    gen = commands.add_parser(
        "generate", help="write text with a language model run (prompt and text to standard output)",
        description="Read the prompt once, then sample one token per step carrying the model's state; prints "
                    "the prompt followed by the generated text, and nothing else, to standard output.",
    )
    gen.add_argument("run", type=Path, help="a run folder (its newest checkpoint) or a checkpoint file")
    gen.add_argument("--prompt", required=True, help="text to start from (tokenized as the training text)")
    gen.add_argument("--length", type=int, default=200, help="tokens to generate (default: 200)")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy (default: 1)")
    gen.add_argument("--top-k", type=int, help="sample among the k most likely tokens (default: all)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text")
    gen.add_argument("--member", type=int, help=MEMBER_HELP)


def run(args) -> int:
    from perceptron1_jax.generate import generate

    run = open_run(args.run, args.member)
    try:
        text = generate(run, args.prompt, args.length, temperature=args.temperature, top_k=args.top_k,
                        seed=args.seed, warn=lambda message: print(f"perceptron1: warning: {message}", file=sys.stderr))
    except ValueError as err:  # "top_k: ..." -> "--top-k: ...": the option as it was typed
        name, _, rest = str(err).partition(":")
        option = f"--{name.replace('_', '-')}" if name in ("prompt", "length", "temperature", "top_k") else name
        raise UsageError(f"{option}:{rest}") from err
    print(text)
    return 0
