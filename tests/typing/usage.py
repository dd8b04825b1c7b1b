"""Typed usage of jaxloss, checked by mypy in tests/test_typing.py (not run; not a test module).

The lines marked ``expect-error`` (then a colon and the text) are mistakes a type checker must report (the test
asserts mypy reports exactly those lines, with that text, and nothing else); every other line is correct usage and
must check cleanly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxloss
from jaxloss import batch, streaming

logits = jnp.zeros(4)
labels = jnp.ones(4)

loss: jax.Array = jaxloss.bce_with_logits(logits, labels, weights=labels, label_smoothing=0.1)
loss = jaxloss.bce_with_logits(logits=logits, labels=labels)  # optax's names
loss = jaxloss.entropy_from_logits(jnp.zeros((2, 3)), axis=-1, base=2, implementation="xla")
loss = jaxloss.mse(predictions=logits, targets=labels)
per_example: jax.Array = batch.mse(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
report: str = jaxloss.info()
state: streaming.Mean = streaming.Mean.empty()
classes, indices = jnp.zeros((2, 3)), jnp.array([0, 2])
rows: jax.Array = jaxloss.softmax_cross_entropy_with_integer_labels(classes, indices, label_smoothing=0.1)
rows = jaxloss.softmax_cross_entropy(logits=classes, labels=jnp.ones((2, 3)) / 3, where=classes > -1)
rows = jaxloss.kl_divergence_from_logits(classes, target_logits=classes, base=2, class_axis_name=None)
rows = jaxloss.cross_entropy(jnp.ones((2, 3)) / 3, targets=jnp.ones((2, 3)) / 3, axis=-1)
rows = jaxloss.relative_entropy(probabilities=jnp.ones((2, 3)) / 3, reference=jnp.ones((2, 3)) / 3)
loss = jaxloss.ce_with_logits(classes, indices, where=indices != -100, implementation="xla")
per_example = batch.ce_with_logits(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32), weights=jnp.ones((2, 3)))

jaxloss.bce_with_logits(logits, labels, wieghts=labels)  # expect-error: Unexpected keyword argument "wieghts"
jaxloss.entropy(logits, axis="last")  # expect-error: Argument "axis" to "entropy" has incompatible type "str"
