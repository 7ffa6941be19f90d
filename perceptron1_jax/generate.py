"""Text from a language model: the prompt is read once, then one step per new token, carrying
every layer's state (a jitted ``lax.scan`` of :func:`perceptron1_jax.model.step_forward`, the step
that :func:`perceptron1_jax.model_step` runs: the model's own forward pass with ``time = 1``).

Sampling at temperature ``T``: ``p(token) ∝ exp(logit / T)`` over the ``top_k`` largest logits
(all without ``top_k``); ``T = 0`` is greedy (the arg-max). ``<unk>`` is never produced. The same
``seed`` gives the same text.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from perceptron1_jax.data import UNK, detokenize, tokenize
from perceptron1_jax.model import forward, step_forward
from perceptron1_jax.runs import Run
from perceptron1_jax.spec import ModelSpec


def check_generator(spec: ModelSpec) -> ModelSpec:
    """A model that can generate: token inputs, a softmax over the same tokens at every step, and
    forward-only layers (a backward direction would need the future)."""
    if not (spec.tokens and spec.many_to_many and spec.loss == "cross_entropy" and spec.num_outputs == spec.vocab_size):
        raise ValueError("run: expected a language model (token inputs, next-token softmax at every step), got "
                         f"tokens={spec.tokens}, many_to_many={spec.many_to_many}, loss={spec.loss}")
    if any(layer.bidirectional for layer in spec.layers):
        raise ValueError("run: expected forward-only layers to generate, got a bidirectional model (its backward "
                         "direction reads tokens that do not exist yet)")
    return spec


def pick(logits, key, temperature: float, top_k: int | None, banned: int | None):
    """One token id from ``logits (V,)`` (see the module doc)."""
    if banned is not None:
        logits = logits.at[banned].set(-jnp.inf)
    if temperature == 0:
        return jnp.argmax(logits).astype(jnp.int32)
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits / temperature).astype(jnp.int32)


@partial(jax.jit, static_argnames=("spec", "length", "temperature", "top_k", "banned"))
def sample(params, prompt_ids, key, spec: ModelSpec, length: int, temperature: float = 1.0,
           top_k: int | None = None, banned: int | None = None):
    """``length`` token ids ``(length,)`` after ``prompt_ids (P,)`` (unchecked; see :func:`generate`)."""
    fw = forward(params, prompt_ids[None, :], spec)

    def step(carry, key_t):
        logits, carries = carry
        token = pick(logits, key_t, temperature, top_k, banned)
        carries, outputs = step_forward(params, carries, token[None], spec)
        return (outputs[0], carries), token

    _, tokens = jax.lax.scan(step, (fw.outputs[-1, 0], fw.finals), jax.random.split(key, length))
    return tokens


def generate(run: Run, prompt: str, length: int, *, temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0, warn=None) -> str:
    """The prompt followed by ``length`` sampled tokens of ``run``'s language model, as text.

    ``prompt``: non-empty text, tokenized as the training text was (tokens outside the vocabulary
    read as ``<unk>``; ``warn(message)`` is told which). ``temperature >= 0`` (0: greedy);
    ``top_k``: sample among the ``k`` most likely tokens; ``seed``: the sampling key.
    """
    spec = check_generator(run.spec)
    if not (isinstance(length, int) and not isinstance(length, bool) and length >= 0):
        raise ValueError(f"length: expected an int >= 0, got {length!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= spec.vocab_size):
        raise ValueError(f"top_k: expected an int in [1, {spec.vocab_size}] (the vocabulary), got {top_k!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    vocab, mode = run.vocabulary, run.info.tokens
    tokens = tokenize(prompt, mode)
    if not tokens:
        raise ValueError(f"prompt: expected at least one token ({mode}), got {prompt!r}")
    unknown = vocab.unknown(tokens)
    if unknown and UNK not in vocab.tokens:
        raise ValueError(f"prompt: expected {mode} of the vocabulary, got unknown {unknown[:10]}")
    if unknown and warn is not None:
        warn(f"prompt: {len(unknown)} {mode} outside the vocabulary read as {UNK}: {unknown[:10]}")
    if length == 0:
        return prompt
    banned = vocab.tokens.index(UNK) if UNK in vocab.tokens else None
    ids = sample(run.params, jnp.asarray(vocab.encode(tokens)), jax.random.key(seed), spec, length,
                 float(temperature), top_k, banned)
    text = detokenize(vocab.decode(jax.device_get(ids)), mode)
    return prompt + ("" if mode == "chars" or prompt.endswith((" ", "\n")) else " ") + text
