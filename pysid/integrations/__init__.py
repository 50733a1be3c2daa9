"""Integrations with other libraries (optional extras, imported on demand).

* :mod:`pysid.integrations.transformers` - ``TrieLogitsProcessor`` for ``model.generate``.
* :mod:`pysid.integrations.ray` - ``SidEncoder`` for Ray Data ``map_batches`` (and Spark pandas UDFs);
  the global dedup on the driver: ``assign_suffixes``, or ``reassign_movers`` + ``assign_moves`` (reassign).
"""
