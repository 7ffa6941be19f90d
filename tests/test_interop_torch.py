"""PyTorch weights: from_torch/to_torch round trips, and a 2-layer bidirectional nn.LSTM / nn.GRU over
packed sequences gives the same outputs and gradients as our model with its weights (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model

import perceptron1_jax as p1
from perceptron1_jax.interop import from_torch, to_torch

torch = pytest.importorskip("torch")
nn = torch.nn


def spec_for(cell, many_to_many, tokens=True):
    layers = [p1.LayerSpec(cell, 4, True), p1.LayerSpec(cell, 4, True)]
    inputs = {"vocab_size": 9, "embed_size": 3} if tokens else {"input_size": 3}
    return p1.ModelSpec(layers, 5, many_to_many=many_to_many, **inputs)


class TorchModel(nn.Module):
    """Embedding -> nn.LSTM/GRU(num_layers=2, bidirectional) over packed sequences -> Linear."""

    def __init__(self, cell, many_to_many):
        super().__init__()
        self.cell, self.many_to_many = cell, many_to_many
        self.embedding = nn.Embedding(9, 3)
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "elman": nn.RNN}[cell]
        self.rnn = kind(3, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.many_to_many:
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
            return self.head(out)
        h_n = state[0] if self.cell == "lstm" else state  # (layers * 2, B, H): last layer fwd, bwd
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("many_to_many", [False, True])
def test_outputs_and_gradients_equal_pytorch(x64, cell, many_to_many):
    torch.manual_seed(0)
    model = TorchModel(cell, many_to_many).double()
    with torch.no_grad():  # non-zero biases everywhere
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    spec = spec_for(cell, many_to_many)
    rng = np.random.default_rng(1)
    batch, time = 4, 6
    ids = rng.integers(0, 9, (batch, time))
    lengths = np.array([6, 2, 5, 1])
    labels = rng.integers(0, 5, (batch, time) if many_to_many else (batch,))

    outputs = model(torch.from_numpy(ids), torch.from_numpy(lengths))
    if many_to_many:
        valid = torch.from_numpy(np.arange(time)[None, :] < lengths[:, None])
        loss = nn.functional.cross_entropy(outputs[valid], torch.from_numpy(labels)[valid])
    else:
        loss = nn.functional.cross_entropy(outputs, torch.from_numpy(labels))
    loss.backward()

    params = from_torch(model.state_dict(), spec)
    ids_j, lengths_j, labels_j = (jnp.asarray(a, jnp.int32) for a in (ids, lengths, labels))
    ours = p1.model_apply(params, ids_j, spec, lengths_j)
    got = np.asarray(ours)
    want = outputs.detach().numpy()
    if many_to_many:
        got, want = got[valid.numpy()], want[valid.numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    our_loss, grads = p1.model_bptt(params, ids_j, labels_j, spec, lengths_j)
    np.testing.assert_allclose(our_loss, loss.item(), rtol=1e-12)

    torch_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    for key, ours_grad in to_torch(grads, spec).items():
        if key.startswith("rnn.bias_hh") and cell != "gru":
            # Our single bias b stands for bias_ih + bias_hh: both have the gradient dL/db.
            ours_grad = to_torch(grads, spec)[key.replace("bias_hh", "bias_ih")]
        np.testing.assert_allclose(ours_grad, torch_grads[key], rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_round_trip_is_exact_and_loads_into_pytorch(x64, cell):
    spec = p1.ModelSpec([p1.LayerSpec(cell, 3, True), p1.LayerSpec(cell, 3, True)], 4, vocab_size=6, embed_size=2)
    params, *_ = random_model(0, spec, 1, 1)
    state = to_torch(params, spec)
    assert_trees_close(from_torch(state, spec), params, rtol=0, atol=0)
    kind = {"lstm": nn.LSTM, "gru": nn.GRU, "elman": nn.RNN}[cell]
    module = nn.ModuleDict({"embedding": nn.Embedding(6, 2), "head": nn.Linear(6, 4),
                            "rnn": kind(2, 3, num_layers=2, bidirectional=True, batch_first=True)}).double()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # strict: same keys and shapes
    assert_trees_close(from_torch(module.state_dict(), spec), params, rtol=0, atol=0)


def test_bad_state_dicts_name_the_key():
    spec = p1.ModelSpec([p1.LayerSpec("lstm", 3)], 2, input_size=4)
    state = to_torch(p1.init_model(jax.random.key(0), spec), spec)
    with pytest.raises(ValueError, match=r"missing keys \['head.bias'\]"):
        from_torch({k: v for k, v in state.items() if k != "head.bias"}, spec)
    with pytest.raises(ValueError, match=r"unexpected keys \['rnn.weight_ih_l1'\]"):
        from_torch({**state, "rnn.weight_ih_l1": state["rnn.weight_ih_l0"]}, spec)
    with pytest.raises(ValueError, match=r"state_dict\['rnn.weight_hh_l0'\]: expected shape \(12, 3\), got \(3, 12\)"):
        from_torch({**state, "rnn.weight_hh_l0": state["rnn.weight_hh_l0"].T}, spec)
