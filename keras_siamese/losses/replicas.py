"""The global batch of labelled embeddings under `tf.distribute` strategies.

`tf.distribute.MirroredStrategy` computes a loss on each replica's slice of
the batch, so a loss that compares the rows of a batch with each other only
sees its own slice. `gather_replicas` all-gathers the labels and embeddings
of every replica, in replica order (the order of the global batch), so that
each replica computes the loss of the whole global batch.

Gradients flow back to each replica's own rows: TensorFlow differentiates
`ReplicaContext.all_gather` by summing the incoming gradients over replicas
and handing each replica the slice of its own rows. Every replica computes
the same loss, which Keras divides by the number of replicas before the
gradients are summed, so the update equals one device's on the global batch.

TensorFlow is imported only when the TensorFlow backend is selected; on the
other backends (and outside a replica context, or with one replica) the
inputs are returned unchanged: JAX's `keras.distribution.DataParallel`
already computes the loss over the global batch, and Keras' PyTorch trainer
has no data-parallel `fit`.
"""

from __future__ import annotations

import importlib
from typing import Any

import keras


def gather_replicas(labels: Any, embeddings: Any) -> tuple[Any, Any]:
    """The labels and embeddings of every replica, concatenated in order.

    Args:
        labels: this replica's labels, shape `(batch,)` or `(batch, 1)`.
        embeddings: this replica's embeddings, shape `(batch, dim)`.

    Returns:
        `(labels, embeddings)` of the global batch under a `tf.distribute`
        strategy with more than one replica, called in replica context;
        otherwise the inputs themselves.
    """
    if keras.backend.backend() != "tensorflow":
        return labels, embeddings
    tf = importlib.import_module("tensorflow")
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return labels, embeddings
    # Labels carry no gradient; gathering them on their own keeps the
    # differentiable gather to the embeddings.
    labels = context.all_gather(tf.stop_gradient(labels), axis=0)
    embeddings = context.all_gather(embeddings, axis=0)
    return labels, embeddings
