"""Text generation: greedy at temperature 0 is the arg-max of the model re-read on the whole text
(so the carried state is right), the same seed gives the same text, only vocabulary tokens come
out, and bad arguments are named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceptron1_jax import LayerSpec, ModelSpec, init_model, model_apply
from perceptron1_jax.data import UNK, DataInfo
from perceptron1_jax.generate import generate
from perceptron1_jax.runs import Run
from perceptron1_jax.train import TrainConfig

VOCAB = (UNK, *"abcdefgh ")
STACK = (LayerSpec("lstm", 8), LayerSpec("gru", 6))


def _run(layers=STACK, vocab=VOCAB, many_to_many=True, tokens="chars"):
    spec = ModelSpec(layers, len(vocab), vocab_size=len(vocab), embed_size=5, many_to_many=many_to_many)
    rng = np.random.default_rng(1)  # numpy noise: no compiles for this fixture
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + 0.5 * rng.standard_normal(a.shape), a.dtype),
                          init_model(jax.random.key(0), spec))  # non-zero biases
    info = DataInfo("language_model", len(vocab), True, vocab_size=len(vocab), tokens=tokens, vocab=vocab)
    return Run(params, spec, info, TrainConfig(task=None), 0, "test")


def test_greedy_is_the_argmax_of_the_model_reading_the_whole_text():
    run = _run()
    text = generate(run, "abc", 12, temperature=0)
    ids = [VOCAB.index(ch) for ch in "abc"]
    for _ in range(12):  # independent oracle: re-read everything, no carried state (padded to one shape)
        padded = jnp.asarray([ids + [0] * (15 - len(ids))])
        logits = model_apply(run.params, padded, run.spec, jnp.asarray([len(ids)]))[0, len(ids) - 1]
        ids.append(int(np.argmax(np.asarray(logits)[1:])) + 1)  # <unk> (id 0) is never produced
    assert text == "".join(VOCAB[i] for i in ids)
    assert generate(run, "abc", 12, temperature=0.7, top_k=1, seed=5) == text  # top-1 sampling is greedy


def test_same_seed_same_text_and_only_vocabulary_tokens():
    run = _run()
    first = generate(run, "ha", 40, temperature=1.5, seed=1)
    assert first == generate(run, "ha", 40, temperature=1.5, seed=1)
    assert first != generate(run, "ha", 40, temperature=1.5, seed=2)
    assert first.startswith("ha") and len(first) == 42
    assert set(first) <= set(VOCAB[1:])  # never <unk>
    top2 = generate(run, "ha", 40, top_k=2, seed=3)
    assert len(set(top2[2:])) >= 2


def test_words_prompt_with_unknown_tokens_warns():
    vocab = (UNK, "the", "cat", "sat", ".")
    run = _run(vocab=vocab, tokens="words")
    warnings = []
    text = generate(run, "The dog", 5, temperature=0, warn=warnings.append)
    assert text.startswith("The dog ") and len(text.split()) == 7
    assert set(text.split()[2:]) <= set(vocab[1:])
    assert warnings == ["prompt: 1 words outside the vocabulary read as <unk>: ['dog']"]


@pytest.mark.parametrize("run_kwargs, call, message", [
    ({"layers": (LayerSpec("gru", 4, bidirectional=True),)}, {}, "expected forward-only layers"),
    ({"many_to_many": False}, {}, "expected a language model"),
    ({}, {"prompt": ""}, "prompt: expected at least one token"),
    ({}, {"length": -1}, "length: expected an int >= 0, got -1"),
    ({}, {"temperature": -0.5}, "temperature: expected a number >= 0, got -0.5"),
    ({}, {"top_k": 11}, r"top_k: expected an int in \[1, 10\]"),
    ({"vocab": tuple("abc ")}, {"prompt": "abz"}, r"prompt: expected chars of the vocabulary, got unknown \['z'\]"),
])
def test_bad_generation_arguments(run_kwargs, call, message):
    args = {"prompt": "ab", "length": 3, **call}
    with pytest.raises(ValueError, match=message):
        generate(_run(**run_kwargs), args.pop("prompt"), args.pop("length"), **args)


def test_length_zero_returns_the_prompt():
    assert generate(_run(), "abc", 0) == "abc"
