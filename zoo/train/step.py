"""Train state, sharded init and the jitted train / eval steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh

from zoo.train import mesh as zmesh


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any

    def as_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"])


@dataclasses.dataclass
class Setup:
    """Everything the loop needs to run steps, built once per (task, config, mesh)."""

    mesh: Mesh
    abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
    state_sharding: TrainState
    batch_sharding: dict
    init: Callable[[jax.Array], TrainState]
    init_from_params: Callable[[Any], TrainState]  # given params (e.g. pretrained), fresh optimizer
    train_step: Callable  # (state, batch, rng) -> (state, metrics)
    eval_step: Callable  # (params, batch) -> summed metrics
    schedule: optax.Schedule


def build(
    task, config, mesh: Mesh, tx: optax.GradientTransformation, schedule: optax.Schedule
) -> Setup:
    """Sharded init (eval_shape -> logical specs -> jit(out_shardings)) and the steps."""
    example = task.example_batch(zmesh.batch_parallelism(mesh))
    rules = zmesh.RULES

    def boxed_state(rng):
        variables = task.init_variables(rng, example)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    with nn.logical_axis_rules(list(rules)):
        abstract_boxed = jax.eval_shape(boxed_state, jax.random.PRNGKey(0))
    logical_specs = nn.get_partition_spec(abstract_boxed)
    state_sharding = zmesh.logical_to_sharding(logical_specs, mesh, rules)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nn.unbox(abstract_boxed),
        state_sharding,
    )

    def init(rng):
        with nn.logical_axis_rules(list(rules)):
            return nn.unbox(boxed_state(rng))

    init_jit = jax.jit(init, out_shardings=state_sharding)

    def from_params(params):
        params = jax.tree.map(lambda x, a: x.astype(a.dtype), params, abstract.params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    from_params_jit = jax.jit(
        from_params, in_shardings=(state_sharding.params,), out_shardings=state_sharding
    )

    batch_axes = task.batch_axes()
    batch_sharding = zmesh.batch_sharding(mesh, batch_axes, rules)
    accum = int(config.optim.grad_accum_steps)

    def loss_and_grad(params, batch, rng, step):
        def f(p):
            loss, aux = task.loss(p, batch, rng, train=True, step=step)
            return loss, aux

        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(params)
        return loss, aux, grads

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        with nn.logical_axis_rules(list(rules)):
            if accum == 1:
                loss, aux, grads = loss_and_grad(state.params, batch, rng, state.step)
            else:
                # Microbatches of the (already sharded) batch; sums stay exact because
                # the task returns sums and the weight is divided out once at the end.
                # Features without a leading `batch` axis (e.g. a vocabulary shared by every
                # example) go whole to each microbatch.
                split = {k: batch_axes[k][:1] == ("batch",) for k in batch}
                micro = {
                    k: x.reshape((accum, x.shape[0] // accum) + x.shape[1:])
                    for k, x in batch.items()
                    if split[k]
                }
                whole = {k: x for k, x in batch.items() if not split[k]}

                def body(carry, mb_i):
                    mb, i = mb_i
                    mb_loss, mb_aux, mb_grads = loss_and_grad(
                        state.params, {**mb, **whole}, jax.random.fold_in(rng, i), state.step
                    )
                    return jax.tree.map(jnp.add, carry, (mb_loss, mb_aux, mb_grads)), None

                zeros = jax.tree.map(
                    jnp.zeros_like,
                    jax.eval_shape(
                        loss_and_grad,
                        state.params,
                        {**jax.tree.map(lambda x: x[0], micro), **whole},
                        rng,
                        state.step,
                    ),
                )
                (loss, aux, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
        weight = jnp.maximum(aux["weight"].astype(jnp.float32), 1.0)
        grads = jax.tree.map(lambda g: g / weight, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss / weight,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
        }
        metrics.update({k: v / weight for k, v in aux.items() if k != "weight"})
        metrics["weight"] = aux["weight"]
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    repl = zmesh.replicated(mesh)
    train_jit = jax.jit(
        train_step,
        in_shardings=(state_sharding, batch_sharding, repl),
        out_shardings=(state_sharding, repl),
        donate_argnums=(0,),
    )

    def eval_step(params, batch):
        with nn.logical_axis_rules(list(rules)):
            return task.eval_metrics(params, batch)

    eval_jit = jax.jit(
        eval_step, in_shardings=(state_sharding.params, batch_sharding), out_shardings=repl
    )
    return Setup(
        mesh=mesh,
        abstract_state=abstract,
        state_sharding=state_sharding,
        batch_sharding=batch_sharding,
        init=init_jit,
        init_from_params=from_params_jit,
        train_step=train_jit,
        eval_step=eval_jit,
        schedule=schedule,
    )
