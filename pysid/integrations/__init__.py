"""Integrations with other libraries (optional extras, imported on demand).

* :mod:`pysid.integrations.transformers` - ``TrieLogitsProcessor`` for ``model.generate``.
"""
