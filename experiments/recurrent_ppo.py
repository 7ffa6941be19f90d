"""A recurrent actor-critic trained with PPO on bsuite's memory test, ``MemoryChain-bsuite`` of gymnax,
learning with the explicit BPTT against the same agent learning with ``jax.grad`` through the plain
scan (issue 28, item 6).

The environment (gymnax's port of bsuite's memory_chain): an episode is ``L + 1`` steps. The first
observation shows a context bit (±1), the observation at step ``L - 1`` shows the query, and the
action at step ``L`` earns +1 if it names the context bit, -1 otherwise. Every other reward is 0. A
policy without memory succeeds half the time. Episodes end inside a rollout, and gymnax starts the
next one in the same row.

The agent is a GRU (``p1.step`` acts one step at a time, its carry zeroed with ``reset`` at each
episode start), with a linear actor and critic on its state. Its parameters are plain pytrees. It
learns from each rollout with the clipped PPO loss: ``p1.unroll_bptt(..., resets=starts)`` (the
explicit reverse scan as a ``custom_vjp``, no gradient across an episode start) or ``p1.unroll``
(``jax.grad`` through the plain ``lax.scan``, same resets). The two agents see the same keys. Five
seeds train as one ``vmap``-ed program per (memory length, gradient). At the end, a greedy policy
plays 256 episodes per seed.

Reported per memory length: the success rate (mean ± std over seeds), how many seeds solved it
(success >= 0.95), and environment steps per second of training (compile excluded), for each
gradient.

    python experiments/recurrent_ppo.py            # the table (experiments/results/recurrent_ppo.md)
    python experiments/recurrent_ppo.py --quick    # a smoke test

Needs gymnax (``pip install ".[rl]"``).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from _common import main_guard, pm, publish, seeds_for

import perceptron1_jax as p1

GRADIENTS = {"explicit BPTT": p1.unroll_bptt, "jax.grad": p1.unroll}


class Settings(NamedTuple):
    hidden: int = 32
    envs: int = 32  # environments per seed
    steps: int = 64  # steps per rollout
    updates: int = 300
    epochs: int = 4
    minibatches: int = 4  # of environments (whole rollouts, so each keeps its episodes' order)
    lr: float = 3e-3
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5


def make_env(memory_length: int):
    import gymnax  # the optional rl extra

    env, params = gymnax.make("MemoryChain-bsuite")
    return env, params.replace(memory_length=memory_length)


def init_agent(key, obs_size: int, actions: int, hidden: int) -> dict:
    k_cell, k_actor, k_critic = jax.random.split(key, 3)
    dense = jax.nn.initializers.lecun_normal()
    return {"cell": p1.init_params(k_cell, "gru", obs_size, hidden, 1)["cell"],
            "actor": {"W": 0.01 * dense(k_actor, (hidden, actions)), "b": jnp.zeros(actions)},
            "critic": {"W": dense(k_critic, (hidden, 1)), "b": jnp.zeros(1)}}


def heads(params, h):
    """``(logits, value)`` of states ``h: (..., hidden)``."""
    logits = h @ params["actor"]["W"] + params["actor"]["b"]
    return logits, (h @ params["critic"]["W"] + params["critic"]["b"])[..., 0]


class Rollout(NamedTuple):  # batch-major: (envs, steps, ...)
    obs: jax.Array
    starts: jax.Array  # bool: this step begins an episode (the carry entering it is zero)
    actions: jax.Array
    logp: jax.Array
    values: jax.Array
    rewards: jax.Array
    dones: jax.Array


def rollout(params, env, env_params, state, key, s: Settings, greedy: bool = False):
    """``s.steps`` steps of every environment, acting with ``p1.step``; ``state = (env_state, obs, carry,
    starts)`` carries over to the next rollout."""

    def act(state, key_t):
        env_state, obs, carry, start = state
        k_act, k_env = jax.random.split(key_t)
        carry, h = p1.step({"cell": params["cell"]}, carry, obs, "gru", reset=start)
        logits, value = heads(params, h)
        action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(k_act, logits)
        logp = jax.nn.log_softmax(logits)[jnp.arange(s.envs), action]
        next_obs, env_state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, s.envs), env_state, action, env_params)
        done = terminated | truncated  # truncation (after 1000 steps) never comes before the end here
        return (env_state, next_obs, carry, done), (obs, start, action, logp, value, reward, done)

    state, steps = jax.lax.scan(act, state, jax.random.split(key, s.steps))
    return state, Rollout(*(jnp.swapaxes(a, 0, 1) for a in steps))


def advantages(params, batch: Rollout, state, s: Settings):
    """GAE(``gamma``, ``lam``) over each row; the value after the rollout bootstraps the last step."""
    _, obs, carry, start = state
    _, h = p1.step({"cell": params["cell"]}, carry, obs, "gru", reset=start)
    last_value = heads(params, h)[1]

    def back(carry, step):
        advantage, next_value = carry
        reward, value, done = step
        keep = 1.0 - done.astype(jnp.float32)
        delta = reward + s.gamma * next_value * keep - value
        advantage = delta + s.gamma * s.lam * keep * advantage
        return (advantage, value), advantage

    steps = (batch.rewards.T, batch.values.T, batch.dones.T)
    _, adv = jax.lax.scan(back, (jnp.zeros(s.envs), last_value), steps, reverse=True)
    adv = adv.T
    return adv, adv + batch.values


def ppo_loss(params, batch: Rollout, h0, adv, returns, unroll, s: Settings):
    hs, _ = unroll({"cell": params["cell"]}, batch.obs, "gru", h0=h0, resets=batch.starts)
    logits, values = heads(params, hs)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, batch.actions[..., None], -1)[..., 0]
    ratio = jnp.exp(logp - batch.logp)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - s.clip, 1 + s.clip) * adv))
    value = 0.5 * jnp.mean((values - returns) ** 2)
    entropy = -jnp.mean(jnp.sum(jnp.exp(logp_all) * logp_all, -1))
    return policy + s.value_coef * value - s.entropy_coef * entropy


def train_agent(key, memory_length: int, unroll, s: Settings):
    """One seed: PPO for ``s.updates`` rollouts; returns ``(params, mean reward per update)``."""
    env, env_params = make_env(memory_length)
    k_init, k_reset, k_train = jax.random.split(key, 3)
    obs_size = env.observation_space(env_params).shape[0]
    params = init_agent(k_init, obs_size, env.num_actions, s.hidden)
    optimizer = optax.chain(optax.clip_by_global_norm(s.max_grad_norm), optax.adam(s.lr))
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, s.envs), env_params)
    carry = jnp.zeros((s.envs, s.hidden))
    state = (env_state, obs, carry, jnp.ones(s.envs, bool))
    grad = jax.grad(ppo_loss)

    def update(carry, key):
        params, opt_state, state = carry
        k_roll, k_perm = jax.random.split(key)
        h0 = state[2]  # the carry entering the rollout (zeroed where its first step starts an episode)
        state, batch = rollout(params, env, env_params, state, k_roll, s)
        adv, returns = advantages(params, batch, state, s)

        def epoch(carry, k):
            params, opt_state = carry
            order = jax.random.permutation(k, s.envs).reshape(s.minibatches, -1)

            def minibatch(carry, rows):
                params, opt_state = carry
                part = jax.tree.map(lambda a: a[rows], batch)
                grads = grad(params, part, h0[rows], adv[rows], returns[rows], unroll, s)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            return jax.lax.scan(minibatch, (params, opt_state), order)[0], None

        (params, opt_state), _ = jax.lax.scan(epoch, (params, opt_state), jax.random.split(k_perm, s.epochs))
        return (params, opt_state, state), jnp.mean(batch.rewards)

    (params, _, _), rewards = jax.lax.scan(update, (params, optimizer.init(params), state),
                                           jax.random.split(k_train, s.updates))
    return params, rewards


def success_rate(params, key, memory_length: int, s: Settings, episodes: int = 256):
    """Greedy play: the fraction of finished episodes that earned +1."""
    env, env_params = make_env(memory_length)
    s = s._replace(envs=episodes, steps=memory_length + 1)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, episodes), env_params)
    state = (env_state, obs, jnp.zeros((episodes, s.hidden)), jnp.ones(episodes, bool))
    _, batch = rollout(params, env, env_params, state, key, s, greedy=True)
    return jnp.sum(batch.rewards > 0) / jnp.maximum(jnp.sum(batch.rewards != 0), 1)


def run(memory_length: int, gradient: str, seeds: int, s: Settings, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), seeds)
    train = jax.jit(jax.vmap(lambda k: train_agent(k, memory_length, GRADIENTS[gradient], s)))
    compiled = train.lower(keys).compile()
    start = time.perf_counter()
    params, rewards = jax.block_until_ready(compiled(keys))
    seconds = time.perf_counter() - start
    rates = jax.vmap(lambda p, k: success_rate(p, k, memory_length, s))(params, jax.random.split(keys[0], seeds))
    env_steps = seeds * s.updates * s.envs * s.steps
    return np.asarray(rates), np.asarray(rewards), env_steps / seconds


DEFAULTS = Settings()


def main(quick: bool = False, out=None, seed: int = 0, lengths=(1, 2, 4, 8, 16, 32), settings=DEFAULTS):
    if quick:
        lengths, settings = (2,), settings._replace(hidden=8, envs=8, steps=8, updates=3, minibatches=2)
    seeds = seeds_for(quick)
    rows, curves = [], {}
    for length in lengths:
        row = {"memory_length": length}
        for gradient in GRADIENTS:
            rates, rewards, speed = run(length, gradient, seeds, settings, seed)
            row[f"success, {gradient}"] = pm(rates.tolist())
            row[f"seeds solved, {gradient}"] = f"{int(np.sum(rates >= 0.95))}/{seeds}"
            row[f"env steps/s, {gradient}"] = round(speed)
            curves[length, gradient] = rewards.mean(0)
        ratio = row["env steps/s, explicit BPTT"] / row["env steps/s, jax.grad"]
        row["speed ratio (explicit / jax.grad)"] = round(ratio, 3)
        rows.append(row)
        print(row, flush=True)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (length, gradient), curve in curves.items():
        ax.plot(curve, ls="-" if gradient == "explicit BPTT" else "--", label=f"L={length}, {gradient}")
    ax.set(xlabel="update", ylabel="mean reward per step (over seeds)", title="PPO on MemoryChain-bsuite")
    ax.legend(fontsize=7, ncol=2)
    s = settings
    title = "Recurrent PPO on MemoryChain-bsuite: explicit BPTT against jax.grad"
    return publish(fig, out, "recurrent_ppo", rows, title,
                   notes=f"{seeds} seeds per (memory length, gradient), one vmapped program each; GRU {s.hidden}, "
                         f"{s.envs} environments x {s.steps} steps per rollout, {s.updates} updates, {s.epochs} "
                         f"epochs x {s.minibatches} minibatches, Adam {s.lr}, clip 0.2, GAE {s.gamma}/{s.lam}. "
                         "success: greedy play, 256 episodes per seed (+1 rewards / finished episodes; 0.5 is "
                         "chance); solved: success >= 0.95; env steps/s: training only, compile excluded, "
                         "this machine (2 CPU cores).")


if __name__ == "__main__":
    main_guard(main)
